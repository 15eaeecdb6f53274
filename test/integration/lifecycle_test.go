package integration

// CNI 1.1 STATUS and GC, and rollback of an ADD that fails after any step.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/pkg/bridge"
	"github.com/multi-bridge-cni/multi-bridge/pkg/plugin"
	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// cniDir makes a CNI bin directory holding the built plugin and the given
// extra executables (name -> shell script).
func cniDir(t *testing.T, ipamPlugins []string, scripts map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	src := nettest.CNIPath(t)
	for _, p := range append([]string{"multi-bridge"}, ipamPlugins...) {
		target, err := filepath.EvalSymlinks(filepath.Join(src, p))
		require.NoError(t, err)
		require.NoError(t, os.Symlink(target, filepath.Join(dir, p)))
	}
	for name, body := range scripts {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755))
	}
	return dir
}

func TestStatus(t *testing.T) {
	failingIPAM := `if [ "$CNI_COMMAND" = STATUS ]; then echo '{"cniVersion":"1.1.0","code":50,"msg":"address pool unreachable"}'; exit 1; fi
echo '{"cniVersion":"1.1.0","code":4,"msg":"only STATUS is implemented"}'; exit 1
`
	cases := []struct {
		name  string
		bin   func(t *testing.T) string
		conf  map[string]any
		code  uint
		error string
	}{
		{"ready", func(t *testing.T) string { return cniDir(t, []string{"host-local"}, nil) }, net1(map[string]any{"ipMasq": true}), 0, ""},
		{"IPAM plugin missing", func(t *testing.T) string { return cniDir(t, nil, nil) }, net1(nil), 50,
			`IPAM plugin "host-local" is not ready: IPAM plugin "host-local" not found in CNI_PATH`},
		{"IPAM plugin not ready", func(t *testing.T) string { return cniDir(t, nil, map[string]string{"pool-ipam": failingIPAM}) },
			net1(map[string]any{"ipam": map[string]any{"type": "pool-ipam"}}), 50, `IPAM plugin "pool-ipam" is not ready: address pool unreachable`},
		{"bridge name taken", func(t *testing.T) string { return cniDir(t, []string{"host-local"}, nil) },
			net1(map[string]any{"bridge": "uplink0"}), 50, `bridge "uplink0": interface "uplink0" exists on the node and is a veth, not a bridge`},
		{"node slice not leased", func(t *testing.T) string { return cniDir(t, []string{"host-local"}, nil) },
			map[string]any{"name": "pooled", "bridge": "cni1", "nodeSubnets": map[string]any{"pool": "10.240.0.0/16", "size": 24}, "ipam": map[string]any{"type": "host-local"}},
			50, `cannot serve ADD: this node has no slice of network "pooled"'s pool 10.240.0.0/16 yet`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newBed(t)
			nettest.MustRun(t, b.node, "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")
			c.conf["cniVersion"] = "1.1.0"
			list := nettest.List(t, b.conf(c.conf))
			rt := &nettest.Runtime{Node: b.node, CNI: libcni.NewCNIConfigWithCacheDir([]string{c.bin(t)}, b.rt.CacheDir, nil)}
			err := rt.Status(list)
			if c.code == 0 {
				require.NoError(t, err)
				return
			}
			e := cniCode(t, err)
			assert.Equal(t, c.code, e.Code)
			assert.Contains(t, e.Msg, c.error)
		})
	}
}

// GC with 50 live and 50 stale attachments: the stale ones (half with their
// netns gone, half with it still there) are torn down completely, the live
// ones are not touched.
func TestGCKeepsLiveAndReleasesStale(t *testing.T) {
	nettest.Heavy(t)
	b := newBed(t)
	conf := b.conf(net1(map[string]any{"cniVersion": "1.1.0", "ipMasq": true, "ipam": nettest.HostLocal("10.240.8.0/22", map[string]any{"routes": nettest.DefaultRoute})}))
	type pod struct {
		ns  ns.NetNS
		rt  *libcni.RuntimeConf
		ip  string
		ctr string
	}
	pods := make([]*pod, 100)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range pods {
		p := &pod{ns: nettest.NewNS(t), ctr: fmt.Sprintf("gc-pod-%03d", i)}
		p.rt = runtimeConf(p.ctr, p.ns.Path(), "net1")
		pods[i] = p
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			res, err := b.rt.Add(conf, p.rt)
			if assert.NoError(t, err, p.ctr) {
				p.ip = res.IPs[0].Address.IP.String()
			}
		}()
	}
	wg.Wait()
	require.False(t, t.Failed())

	var valid []types.GCAttachment
	var live []string
	for i, p := range pods {
		switch {
		case i < 50:
			valid = append(valid, types.GCAttachment{ContainerID: p.ctr, IfName: "net1"})
			live = append(live, "net1/"+p.ip)
		case i < 75:
			nettest.DeleteNS(t, p.ns) // the node rebooted or the runtime lost the pod
		}
	}
	require.NoError(t, b.rt.PluginGC(conf, valid))

	assert.ElementsMatch(t, live, b.reservations())
	require.Eventually(t, func() bool { return len(b.hostVeths()) == 50 }, 5e9, 5e7, "host veths: %d", len(b.hostVeths()))
	state, err := os.ReadDir(filepath.Join(b.dirs.Data, "net1"))
	require.NoError(t, err)
	assert.Len(t, state, 50)
	for i, p := range pods {
		switch {
		case i < 50:
			assert.NoError(t, b.rt.Check(conf, p.rt), "live attachment %s untouched", p.ctr)
		case i >= 75:
			assert.Equal(t, []string{"lo"}, linkNames(t, p.ns), "stale attachment %s with its netns still there", p.ctr)
			assert.Empty(t, nettest.Lines(strings.Join(grep(nettest.Lines(nettest.MustRun(t, p.ns, "ip", "rule")), "lookup 1"), "\n")))
		}
	}
	assert.Len(t, grep(b.onNode("nft", "list", "ruleset"), "masquerade comment"), 1, "the network still has attachments")
}

func TestGCRemovesMasqueradeOfIdleNetworks(t *testing.T) {
	b := newBed(t)
	idle := b.conf(net1(map[string]any{"cniVersion": "1.1.0", "ipMasq": true}))
	busy := b.conf(map[string]any{"cniVersion": "1.1.0", "name": "net2", "bridge": "cni2", "isGateway": true, "ipMasq": true, "table": 2, "priority": 102,
		"ipam": nettest.HostLocal("10.240.20.0/24", nil)})
	b.mustAdd(idle, "net1")
	b.mustAdd(busy, "net2")
	require.NoError(t, b.del(idle, "net1"))
	assert.Len(t, grep(b.onNode("nft", "list", "ruleset"), "masquerade comment"), 2, "DEL keeps per-network state")

	require.NoError(t, b.rt.GC(nettest.List(t, idle), []types.GCAttachment{{ContainerID: b.id, IfName: "net2"}}))
	assert.Equal(t, []string{
		`ip saddr 10.240.20.0/24 ip daddr != { 10.240.20.0/24, 224.0.0.0/4 } masquerade comment "10.240.20.0/24 except 10.240.20.0/24,224.0.0.0/4"`,
	}, grep(b.onNode("nft", "list", "ruleset"), "masquerade comment"))
	require.NoError(t, b.rt.Check(busy, b.rtc("net2")))
}

// GC only removes masquerade state of networks whose attachments it can
// see: a network keeping its state in another data directory is left alone.
func TestGCLeavesNetworksOfOtherDataDirs(t *testing.T) {
	b := newBed(t)
	mine := b.conf(net1(map[string]any{"cniVersion": "1.1.0", "ipMasq": true}))
	elsewhere := nettest.NewDirs(t)
	theirs := nettest.Conf(t, elsewhere, map[string]any{"cniVersion": "1.1.0", "name": "net2", "bridge": "cni2", "isGateway": true,
		"ipMasq": true, "table": 2, "priority": 102, "ipam": nettest.HostLocal("10.240.20.0/24", nil)})
	b.mustAdd(mine, "net1")
	b.mustAdd(theirs, "net2")
	require.NoError(t, b.rt.PluginGC(mine, []types.GCAttachment{{ContainerID: b.id, IfName: "net1"}}))
	assert.Len(t, grep(b.onNode("nft", "list", "ruleset"), "masquerade comment"), 2)
	require.NoError(t, b.rt.Check(theirs, b.rtc("net2")))
}

// GC on a node that has no slice of a nodeSubnets network (its pool is
// exhausted, or the agent has not run): no error every GC cycle, and the
// stale attachments still go, host-local's reservations with them.
func TestGCWithoutNodeSlice(t *testing.T) {
	b := newBed(t)
	subnets := b.dirs.Runtime + "/subnets"
	nettest.MustRun(t, b.node, "mkdir", "-p", subnets)
	nettest.MustRun(t, b.node, "sh", "-c", `echo '{"network":"pooled","node":"n1","pool":"10.240.0.0/16","subnet":"10.240.10.0/24"}' > `+subnets+"/pooled.json")
	conf := b.conf(map[string]any{"cniVersion": "1.1.0", "name": "pooled", "bridge": "cni1", "isGateway": true,
		"nodeSubnets": map[string]any{"pool": "10.240.0.0/16", "size": 24}, "ipam": map[string]any{"type": "host-local"}})
	b.mustAdd(conf, "net1")
	nettest.MustRun(t, b.node, "rm", subnets+"/pooled.json")
	require.NoError(t, b.rt.PluginGC(conf, nil))
	assert.Empty(t, b.reservations())
	assert.Equal(t, []string{"lo"}, linkNames(t, b.pod))
}

func TestGCDisabled(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(map[string]any{"cniVersion": "1.1.0"}))
	b.mustAdd(conf, "net1")
	list := nettest.List(t, conf)
	list.DisableGC = true
	require.NoError(t, b.rt.GC(list, nil))
	assert.Equal(t, []string{"net1/10.240.10.2"}, b.reservations(), "disableGC: nothing collected")
	require.NoError(t, b.rt.Check(conf, b.rtc("net1")))
}

// GC goes on past a broken record and reports it.
func TestGCReportsErrorsAndContinues(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(map[string]any{"cniVersion": "1.1.0"}))
	b.mustAdd(conf, "net1")
	require.NoError(t, os.WriteFile(filepath.Join(b.dirs.Data, "net1", "broken_net1.json"), []byte("{not json"), 0o600))
	err := b.rt.PluginGC(conf, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "broken_net1.json")
	assert.Empty(t, b.reservations(), "the valid record was still collected")
	assert.Equal(t, []string{"lo"}, linkNames(t, b.pod))
}

// An ADD that fails after any step leaves node and pod exactly as before. The
// node starts as an earlier pod's ADD and DEL left it (the bridge, the
// firewall tables), minus the network's gateway address and masquerade
// state: the failed ADD creates those, and must take them back along with its
// veth, reservation, state, routes and rules.
func TestRollbackAfterEachStep(t *testing.T) {
	steps := []string{plugin.StepVeth, plugin.StepIPAM, plugin.StepState, plugin.StepAddresses,
		plugin.StepGateway, plugin.StepRoutes, plugin.StepRules, plugin.StepMasquerade}
	for _, backend := range []string{"nftables", "iptables"} {
		for _, step := range steps {
			t.Run(backend+"/"+step, func(t *testing.T) {
				b := newBed(t)
				conf := b.conf(net1(map[string]any{"ipMasq": true, "ipMasqBackend": backend, "hairpinMode": true}))
				earlier := nettest.NewNS(t)
				_, err := b.rt.Add(conf, runtimeConf("earlier-pod", earlier.Path(), "net1"))
				require.NoError(t, err)
				require.NoError(t, b.rt.Del(conf, runtimeConf("earlier-pod", earlier.Path(), "net1")))
				nettest.MustRun(t, b.node, "ip", "addr", "del", "10.240.10.1/24", "dev", "cni1")
				removeMasquerade(t, b, backend, "net1")
				before := snapshot(b)

				injected := errors.New("injected failure after " + step)
				p := plugin.New(plugin.Options{PolicyFile: nettest.PolicyFile(), AfterStep: func(s string) error {
					if s == step {
						return injected
					}
					return nil
				}, LogOutput: logWriter{t}})
				args := &skel.CmdArgs{ContainerID: b.id, Netns: b.pod.Path(), IfName: "net1", Args: multusArgs,
					Path: nettest.CNIPath(t), StdinData: conf.Bytes}
				err = b.node.Do(func(ns.NetNS) error { _, err := p.AddResult(args); return err })
				require.ErrorContains(t, err, injected.Error())
				assert.Equal(t, before, snapshot(b))

				// And the attachment can be made afterwards.
				res := b.mustAdd(conf, "net1")
				assert.Equal(t, []string{"101: from " + res.IPs[0].Address.IP.String() + " lookup 1"}, b.podRules("-4"))
			})
		}
	}
}

// removeMasquerade deletes a network's masquerade state behind the plugin's
// back, with the firewall's own tools.
func removeMasquerade(t *testing.T, b *bed, backend, network string) {
	t.Helper()
	if backend == "nftables" {
		nettest.MustRun(t, b.node, "nft", "delete", "chain", "inet", "multi-bridge", "masq-"+network)
		return
	}
	rules := grep(b.onNode("iptables", "-t", "nat", "-S", "POSTROUTING"), "multi-bridge network "+network)
	require.Len(t, rules, 1)
	jump := strings.Fields(strings.Replace(rules[0], "-A ", "-D ", 1))
	chain := jump[len(jump)-1]
	nettest.MustRun(t, b.node, "sh", "-c", "iptables -t nat "+strings.Join(jump, " ")+" && iptables -t nat -F "+chain+" && iptables -t nat -X "+chain)
}

// An attachment whose record names its host veth otherwise than ADD derives
// it now (made before host veths were named per network) keeps working:
// CHECK, a repeated ADD and DEL use the recorded name.
func TestAttachmentRecordedUnderAnOlderHostVethName(t *testing.T) {
	nettest.Heavy(t) // CHECK needs 0.4.0 or newer; the subject is version-independent
	b := newBed(t)
	conf := b.conf(net1(nil))
	b.mustAdd(conf, "net1")
	cur := bridge.HostVethName("net1", b.id, "net1")
	const old = "vethd0c0ffee000"
	nettest.MustRun(t, b.node, "ip", "link", "set", cur, "name", old)
	recPath := filepath.Join(b.dirs.Data, "net1", b.id+":net1.json")
	raw, err := os.ReadFile(recPath)
	require.NoError(t, err)
	require.Contains(t, string(raw), cur)
	require.NoError(t, os.WriteFile(recPath, []byte(strings.ReplaceAll(string(raw), cur, old)), 0o600))

	require.NoError(t, b.rt.Check(conf, b.rtc("net1")), "CHECK")
	_, err = b.add(conf, "net1")
	require.NoError(t, err, "repeated ADD")
	raw, err = os.ReadFile(recPath)
	require.NoError(t, err)
	assert.Contains(t, string(raw), old, "the record keeps the name")
	require.NoError(t, b.del(conf, "net1"))
	assert.Empty(t, b.hostVeths())
}
