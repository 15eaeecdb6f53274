package nettest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/multi-bridge-cni/multi-bridge/pkg/policy"
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// IPAMPlugins are the IPAM binaries the Makefile installs at a pinned
// version (make ipam-plugins) into bin/cni.
var IPAMPlugins = []string{"host-local", "static"}

// Main builds the plugin from the current source into a temporary CNI bin
// directory, links the pinned IPAM plugins next to it, exports its path in
// MULTI_BRIDGE_TEST_CNI_PATH and runs the tests. Use it from TestMain.
func Main(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run() // every test skips; nothing to build
	}
	dir, err := os.MkdirTemp("", "multi-bridge-cni-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "multi-bridge"), "./cmd/multi-bridge")
	build.Dir = RepoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the plugin:", err)
		return 1
	}
	for _, p := range IPAMPlugins {
		src := filepath.Join(RepoRoot(), "bin", "cni", p)
		if _, err := os.Stat(src); err != nil {
			fmt.Fprintf(os.Stderr, "IPAM plugin %s missing at %s: run 'make ipam-plugins' (installs containernetworking/plugins v1.10.0)\n", p, src)
			return 1
		}
		if err := os.Symlink(src, filepath.Join(dir, p)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	os.Setenv("MULTI_BRIDGE_TEST_CNI_PATH", dir)
	if err := UseTestPolicy(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// UseTestPolicy writes a node policy into dir that lets configurations put
// their files under the temporary directory (where NewDirs makes them; the
// default policy allows only /var/lib/cni, /var/log and /run) and points
// the plugins this process runs at it, through policy.PathEnv.
func UseTestPolicy(dir string) error {
	path := filepath.Join(dir, "policy.json")
	doc, err := json.Marshal(map[string]any{"allowedDirectories": []string{filepath.Clean(os.TempDir())}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		return err
	}
	return os.Setenv(policy.PathEnv, path)
}

// PolicyFile is the policy UseTestPolicy wrote, for plugins run in-process.
func PolicyFile() string { return os.Getenv(policy.PathEnv) }

// CNIPath is the bin directory Main prepared.
func CNIPath(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	p := os.Getenv("MULTI_BRIDGE_TEST_CNI_PATH")
	if p == "" {
		t.Fatal("MULTI_BRIDGE_TEST_CNI_PATH unset: call nettest.Main from TestMain")
	}
	return p
}

// Runtime drives the plugin the way a container runtime (or Multus) does:
// through libcni, with the plugin executed inside the node's namespace so
// bridges, sysctls and firewall rules stay there.
type Runtime struct {
	Node ns.NetNS
	CNI  *libcni.CNIConfig
	// CacheDir is libcni's result cache (what DEL and CHECK read prevResult from).
	CacheDir string
}

// NewRuntime returns a runtime for a node namespace with its own cache.
func NewRuntime(t testing.TB, node ns.NetNS) *Runtime {
	t.Helper()
	cache := t.TempDir()
	return &Runtime{Node: node, CNI: libcni.NewCNIConfigWithCacheDir([]string{CNIPath(t)}, cache, nil), CacheDir: cache}
}

// in runs f inside the node namespace.
func (r *Runtime) in(f func() error) error {
	return r.Node.Do(func(ns.NetNS) error { return f() })
}

// Add runs ADD and returns the result in the current spec version.
func (r *Runtime) Add(conf *libcni.PluginConfig, rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := r.in(func() (err error) {
		res, err = r.CNI.AddNetwork(context.Background(), conf, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// AddRaw runs ADD and returns the result as the plugin's version gave it.
func (r *Runtime) AddRaw(conf *libcni.PluginConfig, rt *libcni.RuntimeConf) (types.Result, error) {
	var res types.Result
	err := r.in(func() (err error) {
		res, err = r.CNI.AddNetwork(context.Background(), conf, rt)
		return err
	})
	return res, err
}

// Del runs DEL (with the cached prevResult, as libcni does).
func (r *Runtime) Del(conf *libcni.PluginConfig, rt *libcni.RuntimeConf) error {
	return r.in(func() error { return r.CNI.DelNetwork(context.Background(), conf, rt) })
}

// Check runs CHECK.
func (r *Runtime) Check(conf *libcni.PluginConfig, rt *libcni.RuntimeConf) error {
	return r.in(func() error { return r.CNI.CheckNetwork(context.Background(), conf, rt) })
}

// AddList runs ADD for a conflist.
func (r *Runtime) AddList(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	var res types.Result
	err := r.in(func() (err error) {
		res, err = r.CNI.AddNetworkList(context.Background(), list, rt)
		return err
	})
	return res, err
}

// DelList runs DEL for a conflist.
func (r *Runtime) DelList(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return r.in(func() error { return r.CNI.DelNetworkList(context.Background(), list, rt) })
}

// GC runs GC for a conflist with the given valid attachments.
func (r *Runtime) GC(list *libcni.NetworkConfigList, valid []types.GCAttachment) error {
	return r.in(func() error {
		return r.CNI.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: valid})
	})
}

// Status runs STATUS for a conflist.
func (r *Runtime) Status(list *libcni.NetworkConfigList) error {
	return r.in(func() error { return r.CNI.GetStatusNetworkList(context.Background(), list) })
}

// Dirs are the per-test directories a network configuration points at, so
// tests never share state files, locks or IPAM reservations.
type Dirs struct {
	Data, Runtime, IPAM string
}

// NewDirs makes fresh directories under t.TempDir().
func NewDirs(t testing.TB) Dirs {
	base := t.TempDir()
	d := Dirs{Data: filepath.Join(base, "state"), Runtime: filepath.Join(base, "run"), IPAM: filepath.Join(base, "ipam")}
	for _, p := range []string{d.Data, d.Runtime, d.IPAM} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// VersionEnv selects the spec version the integration suite runs with;
// `make test` runs the suite once per supported version.
const VersionEnv = "MULTI_BRIDGE_TEST_CNI_VERSION"

// CNIVersion is the spec version of this run (default 1.1.0).
func CNIVersion() string {
	if v := os.Getenv(VersionEnv); v != "" {
		return v
	}
	return "1.1.0"
}

// Heavy marks a test that runs once, in the default (1.1.0) pass of the
// suite: what it exercises does not depend on the spec version.
func Heavy(t testing.TB) {
	t.Helper()
	if CNIVersion() != "1.1.0" {
		t.Skipf("runs in the cniVersion 1.1.0 pass only (this pass: %s)", CNIVersion())
	}
}

// Conf builds a plugin configuration: fields over the defaults (type
// multi-bridge, cniVersion of this run) with dataDir, runtimeDir and ipam.dataDir
// pointed at d. fields["ipam"] may be a map; its dataDir is filled in.
func Conf(t testing.TB, d Dirs, fields map[string]any) *libcni.PluginConfig {
	t.Helper()
	conf := map[string]any{"cniVersion": CNIVersion(), "type": "multi-bridge", "dataDir": d.Data, "runtimeDir": d.Runtime}
	for k, v := range fields {
		conf[k] = v
	}
	if ipam, ok := conf["ipam"].(map[string]any); ok && ipam["type"] == "host-local" {
		if _, set := ipam["dataDir"]; !set {
			ipam["dataDir"] = d.IPAM
		}
	}
	raw, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := libcni.ConfFromBytes(raw)
	if err != nil {
		t.Fatalf("config %s: %v", raw, err)
	}
	return pc
}

// List wraps a plugin configuration in a conflist (for GC and STATUS).
func List(t testing.TB, pc *libcni.PluginConfig) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.ConfListFromConf(pc)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// HostLocal is a host-local ipam section for subnet.
func HostLocal(subnet string, extra map[string]any) map[string]any {
	m := map[string]any{"type": "host-local", "subnet": subnet}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// DefaultRoute is the IPAM "routes" entry that makes a table's default route.
var DefaultRoute = []map[string]any{{"dst": "0.0.0.0/0"}}

// DelWithoutPrevResult runs DEL the way Multus does after a failed ADD: the
// configuration as is, no prevResult, straight to the plugin binary.
func (r *Runtime) DelWithoutPrevResult(conf *libcni.PluginConfig, rt *libcni.RuntimeConf) error {
	return r.in(func() error {
		path, err := invoke.FindInPath(conf.Network.Type, r.CNI.Path)
		if err != nil {
			return err
		}
		return invoke.ExecPluginWithoutResult(context.Background(), path, conf.Bytes, &invoke.Args{
			Command: "DEL", ContainerID: rt.ContainerID, NetNS: rt.NetNS, IfName: rt.IfName,
			PluginArgs: rt.Args, Path: strings.Join(r.CNI.Path, ":"),
		}, nil)
	})
}

// CheckList runs CHECK for a conflist.
func (r *Runtime) CheckList(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return r.in(func() error { return r.CNI.CheckNetworkList(context.Background(), list, rt) })
}

// PluginGC runs the plugin's own GC with the given valid attachments,
// without libcni's first pass (which DELs the stale attachments it has in its
// cache): what the plugin collects by itself is what the test sees.
func (r *Runtime) PluginGC(conf *libcni.PluginConfig, valid []types.GCAttachment) error {
	injected, err := libcni.InjectConf(conf, map[string]any{"cni.dev/valid-attachments": valid})
	if err != nil {
		return err
	}
	return r.in(func() error {
		path, err := invoke.FindInPath(conf.Network.Type, r.CNI.Path)
		if err != nil {
			return err
		}
		return invoke.ExecPluginWithoutResult(context.Background(), path, injected.Bytes,
			&invoke.Args{Command: "GC", Path: strings.Join(r.CNI.Path, ":")}, nil)
	})
}

// BuildPlugin builds the plugin from the current source with a version
// stamped in and returns the binary's path (in a directory of the test).
func BuildPlugin(t testing.TB, version string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "multi-bridge")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.Version="+version, "-o", out, "./cmd/multi-bridge")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the plugin: %v\n%s", err, b)
	}
	return out
}
