package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/multi-bridge-cni/multi-bridge/pkg/plugin"
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
	cni := libcni.NewCNIConfigWithCacheDir([]string{f.binDir}, filepath.Join(dir, "cache"), &plugin.ProcessExec{AfterRun: recordUsage})
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
	var res types.Result
	o := n.timed(ctx, func(ctx context.Context, rt *libcni.RuntimeConf) (err error) {
		res, err = n.cni.AddNetworkList(ctx, n.list, rt)
		return err
	}, id)
	if o.err != nil {
		return o
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		o.err = err
		return o
	}
	for _, ipc := range r.IPs {
		o.ips = append(o.ips, ipc.Address.IP.String())
	}
	return o
}

// del runs DEL of the conflist for the pod (libcni passes the cached
// result as prevResult), inside the node namespace.
func (n *node) del(ctx context.Context, id string) op {
	return n.timed(ctx, func(ctx context.Context, rt *libcni.RuntimeConf) error {
		return n.cni.DelNetworkList(ctx, n.list, rt)
	}, id)
}

// timed runs call for the pod inside the node namespace, with its wall
// time and the plugin processes it ran.
func (n *node) timed(ctx context.Context, call func(context.Context, *libcni.RuntimeConf) error, id string) op {
	rec := &recorder{}
	ctx = context.WithValue(ctx, recorderKey{}, rec)
	rt := n.runtimeConf(id)
	var o op
	o.err = inNS(n.path, func() error {
		start := time.Now()
		err := call(ctx, rt)
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

// recordUsage records each plugin process's resource usage from wait4 into
// the call's recorder: ru_maxrss and CPU times there cover the process and
// the children it waited for (the IPAM plugin, iptables, nft).
func recordUsage(ctx context.Context, pluginPath string, state *os.ProcessState) {
	rec, ok := ctx.Value(recorderKey{}).(*recorder)
	if !ok {
		return
	}
	if ru, ok := state.SysUsage().(*syscall.Rusage); ok {
		rec.add(proc{
			plugin: filepath.Base(pluginPath),
			maxRSS: ru.Maxrss * 1024, // kilobytes on Linux
			cpu:    time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		})
	}
}
