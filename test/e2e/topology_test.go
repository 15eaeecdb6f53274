package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/pkg/nodesubnet"
	"github.com/multi-bridge-cni/multi-bridge/test/kubetest"
	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// Underlay addresses (documentation ranges only).
const (
	underlayPrefix = "192.0.2.0/24"
	underlayRouter = "192.0.2.1" // the underlay's gateway to the outside host
	// otherSegmentIP is an InternalIP on an L2 segment no test node is on.
	otherSegmentIP = "198.51.100.20"
)

// node is a simulated Kubernetes node: a network namespace on the shared
// underlay, its own runtime directory (each node has its own filesystem in
// real life) and, once started, an agent process.
type node struct {
	name       string
	ip         string
	ns         ns.NetNS
	runtimeDir string
	confDir    string
	logFile    string
	agent      *kubetest.Agent
}

// testCluster is nodes on one underlay bridge, with a real API server.
type testCluster struct {
	t        *testing.T
	s        *suite
	underlay ns.NetNS
	nodes    []*node
}

func newCluster(t *testing.T, s *suite) *testCluster {
	t.Helper()
	c := &testCluster{t: t, s: s, underlay: nettest.NewNS(t)}
	nettest.MustRun(t, c.underlay, "ip", "link", "add", "br0", "type", "bridge")
	nettest.MustRun(t, c.underlay, "ip", "addr", "add", underlayRouter+"/24", "dev", "br0")
	nettest.MustRun(t, c.underlay, "ip", "link", "set", "br0", "up")
	return c
}

// addNode makes a node namespace attached to the underlay with ip/24 (an
// IPv6 ip: ip/64), strict reverse-path filtering and forwarding on, and its
// Node object (podCIDR may be empty).
func (c *testCluster) addNode(name, ip, podCIDR string) *node {
	t := c.t
	t.Helper()
	dir := t.TempDir()
	n := &node{name: name, ip: ip, ns: nettest.NewNS(t), runtimeDir: filepath.Join(dir, "run"),
		confDir: filepath.Join(dir, "net.d"), logFile: filepath.Join(dir, "agent.log")}
	for _, d := range []string{n.runtimeDir, n.confDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port := fmt.Sprintf("u%d", len(c.nodes)+1)
	ipv6 := strings.Contains(ip, ":")
	addr := ip + "/24"
	if ipv6 {
		addr = ip + "/64"
	}
	nettest.Connect(t, nettest.End{NS: n.ns, Name: "eth0", Addrs: []string{addr}}, nettest.End{NS: c.underlay, Name: port})
	nettest.MustRun(t, c.underlay, "ip", "link", "set", port, "master", "br0")
	if ipv6 {
		nettest.Sysctl(t, n.ns, "net.ipv6.conf.all.forwarding", "1")
	} else {
		nettest.MustRun(t, n.ns, "ip", "route", "add", "default", "via", underlayRouter)
		for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter", "net.ipv4.conf.eth0.rp_filter"} {
			nettest.Sysctl(t, n.ns, k, "1")
		}
		nettest.Sysctl(t, n.ns, "net.ipv4.ip_forward", "1")
	}
	if _, err := c.s.server.CreateNode(ctxT(t), name, ip, podCIDR); err != nil {
		t.Fatal(err)
	}
	c.nodes = append(c.nodes, n)
	return n
}

// start starts n's agent (with extra command-line arguments); it is stopped
// when the test ends, and its log shown when the test failed.
func (c *testCluster) start(n *node, extraArgs ...string) {
	c.t.Helper()
	c.startWith(n, c.s.server.Kubeconfig, extraArgs...)
}

// startWith starts n's agent with the credentials of kubeconfig.
func (c *testCluster) startWith(n *node, kubeconfig string, extraArgs ...string) {
	t := c.t
	t.Helper()
	a, err := kubetest.StartAgent(kubetest.AgentOptions{
		Binary: c.s.agentBin, Node: n.name, Kubeconfig: kubeconfig,
		RuntimeDir: n.runtimeDir, NetNS: n.ns.Path(), CNIConfDir: n.confDir, LogFile: n.logFile,
		ExtraArgs: extraArgs,
	})
	if err != nil {
		t.Fatalf("starting the agent of %s: %v", n.name, err)
	}
	n.agent = a
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("agent of %s: %v", n.name, err)
		}
		if t.Failed() {
			t.Logf("agent log of %s:\n%s", n.name, tail(a.Log(), 60))
		}
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// agentRoutes are the node's IPv4 routes with the agent's protocol, as `ip
// route` prints them.
func agentRoutes(t *testing.T, n *node) []string {
	t.Helper()
	return routesOf(t, n, "-4")
}

// agentRoutes6 are the node's IPv6 routes with the agent's protocol.
func agentRoutes6(t *testing.T, n *node) []string {
	t.Helper()
	return routesOf(t, n, "-6")
}

func routesOf(t *testing.T, n *node, family string) []string {
	t.Helper()
	out := nettest.MustRun(t, n.ns, "ip", family, "route", "show", "proto", "201")
	lines := nettest.Lines(out)
	sort.Strings(lines)
	return lines
}

// metric reads one sample of the agent's /metrics, e.g.
// "multi_bridge_agent_routes_added_total" or
// `multi_bridge_agent_problems{reason="InvalidNetworkConfig"}`; "" when the
// agent does not export it.
func metric(t *testing.T, n *node, name string) string {
	t.Helper()
	code, body, err := n.agent.Get("/metrics")
	require.NoError(t, err)
	require.Equal(t, 200, code, body)
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// slicesFile reads the file the plugin would read on n, "" when absent.
func slicesFile(t *testing.T, n *node, network string) string {
	t.Helper()
	l, err := nodesubnet.Read(nodesubnet.Dir(n.runtimeDir), network)
	if err != nil {
		return ""
	}
	return l.Subnet.String()
}

// restart stops n's agent with SIGTERM (as a DaemonSet rollout does) and
// starts it again. It returns the length of n's log before the start: the
// new agent's lines are n.agent.Log()[offset:].
func (c *testCluster) restart(n *node, extraArgs ...string) int {
	c.t.Helper()
	require.NoError(c.t, n.agent.Stop())
	offset := len(n.agent.Log())
	c.start(n, extraArgs...)
	return offset
}
