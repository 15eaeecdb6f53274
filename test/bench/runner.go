package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// Both networks use the same subnet (each node is its own namespace), the
// same IPAM plugin and the same routes; only the plugins differ.
const (
	subnet     = "10.240.0.0/20" // 4,094 addresses: 1,000 pods + samples, or 200 parallel
	netName    = "benchnet"
	ifName     = "net1"
	cniVersion = "1.1.0"
)

// flavour is one side of the comparison: a conflist and the directory its
// plugins are in.
type flavour struct {
	name   string
	binDir string
	// conf returns the conflist for a node whose state lives under dir.
	conf func(dir string) map[string]any
}

func hostLocal(dir string) map[string]any {
	return map[string]any{
		"type": "host-local", "subnet": subnet, "dataDir": filepath.Join(dir, "ipam"),
		"routes": []map[string]any{{"dst": "0.0.0.0/0"}},
	}
}

// multiBridge is multi-bridge with its own table and rule preference and
// masquerade: the job bridge(ipMasq) + sbr does in the reference chain.
func multiBridge(binDir string) *flavour {
	return &flavour{name: "multi-bridge", binDir: binDir, conf: func(dir string) map[string]any {
		return map[string]any{"cniVersion": cniVersion, "name": netName, "plugins": []map[string]any{{
			"type": "multi-bridge", "bridge": "mbbench0", "isGateway": true, "ipMasq": true,
			"table": 100, "priority": 100,
			"dataDir": filepath.Join(dir, "state"), "runtimeDir": filepath.Join(dir, "run"),
			"ipam": hostLocal(dir),
		}}}
	}}
}

// reference is the chain the issue measured: bridge v1.10.0 with ipMasq,
// host-local, then sbr (source-based routing: a table and a rule per pod).
func reference(binDir string) *flavour {
	return &flavour{name: "reference", binDir: binDir, conf: func(dir string) map[string]any {
		return map[string]any{"cniVersion": cniVersion, "name": netName, "plugins": []map[string]any{
			{"type": "bridge", "bridge": "refbench0", "isGateway": true, "ipMasq": true, "ipam": hostLocal(dir)},
			{"type": "sbr"},
		}}
	}}
}

// node is a throwaway "node": a network namespace the plugins run in (their
// bridge, sysctls and firewall rules live there), a directory for their
// state, and a libcni runtime with its own result cache.
type node struct {
	f    *flavour
	path string
	dir  string
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
	nss  *namespaces

	mu   sync.Mutex
	pods map[string]string // container ID -> pod netns
}

func newNode(nss *namespaces, f *flavour, tmp string) (*node, error) {
	path, err := nss.create("node")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tmp, f.name+"-")
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(f.conf(dir))
	if err != nil {
		return nil, err
	}
	list, err := libcni.NetworkConfFromBytes(raw)
	if err != nil {
		return nil, err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{f.binDir}, filepath.Join(dir, "cache"), &recordingExec{})
	return &node{f: f, path: path, dir: dir, cni: cni, list: list, nss: nss, pods: map[string]string{}}, nil
}

// destroy removes the node and its pods: every bridge, veth, rule and
// firewall rule goes with the namespaces; the state with the directory.
func (n *node) destroy() error {
	n.mu.Lock()
	pods := n.pods
	n.pods = map[string]string{}
	n.mu.Unlock()
	var first error
	for _, p := range pods {
		if err := n.nss.remove(p); err != nil && first == nil {
			first = err
		}
	}
	if err := n.nss.remove(n.path); err != nil && first == nil {
		first = err
	}
	if err := os.RemoveAll(n.dir); err != nil && first == nil {
		first = err
	}
	return first
}

// newPod makes a pod namespace (not timed).
func (n *node) newPod(id string) error {
	p, err := n.nss.create("pod")
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.pods[id] = p
	n.mu.Unlock()
	return nil
}

// removePod removes a pod's namespace (not timed).
func (n *node) removePod(id string) error {
	n.mu.Lock()
	p, ok := n.pods[id]
	delete(n.pods, id)
	n.mu.Unlock()
	if !ok {
		return nil
	}
	return n.nss.remove(p)
}

func (n *node) runtimeConf(id string) *libcni.RuntimeConf {
	n.mu.Lock()
	defer n.mu.Unlock()
	return &libcni.RuntimeConf{ContainerID: id, NetNS: n.pods[id], IfName: ifName}
}

// op is one timed CNI operation through libcni, with what the plugin
// processes it ran used.
type op struct {
	wall  time.Duration
	err   error
	procs []proc
	ips   []string // ADD: the addresses the result gave
}

// maxRSS is the largest peak RSS among the operation's plugin processes
// (each one's figure includes the children it waited for).
func (o op) maxRSS() int64 {
	var m int64
	for _, p := range o.procs {
		m = max(m, p.maxRSS)
	}
	return m
}

// cpu is the CPU time (user + system) of all plugin processes and their
// children.
func (o op) cpu() time.Duration {
	var d time.Duration
	for _, p := range o.procs {
		d += p.cpu
	}
	return d
}

// add runs ADD of the conflist for the pod, inside the node namespace.
func (n *node) add(ctx context.Context, id string) op {
	rt := n.runtimeConf(id)
	rec := &recorder{}
	ctx = context.WithValue(ctx, recorderKey{}, rec)
	var o op
	o.err = inNS(n.path, func() error {
		start := time.Now()
		res, err := n.cni.AddNetworkList(ctx, n.list, rt)
		o.wall = time.Since(start)
		if err != nil {
			return err
		}
		r, err := current.NewResultFromResult(res)
		if err != nil {
			return err
		}
		for _, ipc := range r.IPs {
			o.ips = append(o.ips, ipc.Address.IP.String())
		}
		return nil
	})
	o.procs = rec.list()
	return o
}

// del runs DEL of the conflist for the pod (libcni passes the cached
// result as prevResult), inside the node namespace.
func (n *node) del(ctx context.Context, id string) op {
	rt := n.runtimeConf(id)
	rec := &recorder{}
	ctx = context.WithValue(ctx, recorderKey{}, rec)
	var o op
	o.err = inNS(n.path, func() error {
		start := time.Now()
		err := n.cni.DelNetworkList(ctx, n.list, rt)
		o.wall = time.Since(start)
		return err
	})
	o.procs = rec.list()
	return o
}

// proc is one plugin process libcni ran.
type proc struct {
	plugin string
	maxRSS int64 // bytes
	cpu    time.Duration
}

type recorderKey struct{}

type recorder struct {
	mu    sync.Mutex
	procs []proc
}

func (r *recorder) add(p proc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.procs = append(r.procs, p)
}

func (r *recorder) list() []proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]proc(nil), r.procs...)
}

// recordingExec runs plugins as libcni's default (invoke.RawExec) does and
// also records each process's resource usage from wait4: ru_maxrss and CPU
// times there cover the process and the children it waited for (the IPAM
// plugin, iptables, nft).
type recordingExec struct {
	version.PluginDecoder
}

func (e *recordingExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if rec, ok := ctx.Value(recorderKey{}).(*recorder); ok && cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rec.add(proc{
				plugin: filepath.Base(pluginPath),
				maxRSS: ru.Maxrss * 1024, // kilobytes on Linux
				cpu:    time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
			})
		}
	}
	if err != nil {
		return nil, pluginError(err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

func (e *recordingExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// pluginError is the CNI error a failed plugin printed, as invoke.RawExec
// reports it.
func pluginError(err error, stdout, stderr []byte) error {
	e := &types.Error{}
	switch {
	case len(stdout) == 0 && len(stderr) == 0:
		e.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	case len(stdout) == 0:
		e.Msg = fmt.Sprintf("netplugin failed: %q", string(stderr))
	default:
		if perr := json.Unmarshal(stdout, e); perr != nil {
			e.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", string(stdout), perr)
		}
	}
	return e
}
