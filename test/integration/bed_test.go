package integration

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// bed is a node namespace running the plugin and one pod namespace.
type bed struct {
	t    *testing.T
	node ns.NetNS
	pod  ns.NetNS
	rt   *nettest.Runtime
	dirs nettest.Dirs
	id   string // container ID of the pod
}

func newBed(t *testing.T) *bed {
	t.Helper()
	nettest.RequireRoot(t)
	t.Parallel()
	node := nettest.NewNS(t)
	return &bed{t: t, node: node, pod: nettest.NewNS(t), rt: nettest.NewRuntime(t, node), dirs: nettest.NewDirs(t),
		id: "c-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))}
}

// conf is a plugin configuration using the bed's directories.
func (b *bed) conf(fields map[string]any) *libcni.PluginConfig {
	return nettest.Conf(b.t, b.dirs, fields)
}

func (b *bed) rtc(ifName string) *libcni.RuntimeConf {
	return runtimeConf(b.id, b.pod.Path(), ifName)
}

func (b *bed) add(conf *libcni.PluginConfig, ifName string) (*current.Result, error) {
	return b.rt.Add(conf, b.rtc(ifName))
}

func (b *bed) mustAdd(conf *libcni.PluginConfig, ifName string) *current.Result {
	b.t.Helper()
	res, err := b.add(conf, ifName)
	require.NoError(b.t, err, "ADD %s", ifName)
	return res
}

func (b *bed) del(conf *libcni.PluginConfig, ifName string) error {
	return b.rt.Del(conf, b.rtc(ifName))
}

func (b *bed) inPod(args ...string) []string {
	b.t.Helper()
	return nettest.Lines(nettest.MustRun(b.t, b.pod, args[0], args[1:]...))
}

func (b *bed) onNode(args ...string) []string {
	b.t.Helper()
	return nettest.Lines(nettest.MustRun(b.t, b.node, args[0], args[1:]...))
}

// hostVeths lists the pod veths on the node.
func (b *bed) hostVeths() []string {
	var out []string
	for _, name := range linkNames(b.t, b.node) {
		if strings.HasPrefix(name, "veth") {
			out = append(out, name)
		}
	}
	return out
}

// reservations lists host-local's reserved addresses of every network.
func (b *bed) reservations() []string {
	var out []string
	_ = filepath.WalkDir(b.dirs.IPAM, func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && e.Name() != "lock" && !strings.HasPrefix(e.Name(), "last_reserved_ip") {
			out = append(out, filepath.Base(filepath.Dir(path))+"/"+e.Name())
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// kernelRules are the pod's `ip rule` lines minus the kernel's three.
func (b *bed) podRules(family string) []string {
	var out []string
	for _, l := range b.inPod("ip", family, "rule") {
		if !strings.HasPrefix(l, "0:") && !strings.HasPrefix(l, "32766:") && !strings.HasPrefix(l, "32767:") {
			out = append(out, l)
		}
	}
	return out
}

func cniCode(t *testing.T, err error) *types.Error {
	t.Helper()
	var e *types.Error
	require.True(t, errors.As(err, &e), "want a CNI error, got %T: %v", err, err)
	return e
}

// net1 is the seed's net1 on the bed, with optional overrides.
func net1(extra map[string]any) map[string]any {
	m := map[string]any{
		"name": "net1", "bridge": "cni1", "isGateway": true, "table": 1, "priority": 101,
		"ipam": nettest.HostLocal("10.240.10.0/24", map[string]any{"routes": nettest.DefaultRoute}),
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// grep returns the lines containing s.
func grep(lines []string, s string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// logWriter sends an in-process plugin's log lines to the test's log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
