package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/kubetest"
	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// The cluster demo's addresses. Pods live in 10.240.0.0/16 only: the
// management network in 10.240.0.0/20 (Node podCIDRs), net1 in
// 10.240.16.0/20 and net2 in 10.240.32.0/20 (a /24 per node each). The
// outside host is in a documentation range and has no route to any pod.
const (
	outsideHost = "203.0.113.10"
	outsideGW   = "203.0.113.1"
	mgmtPool    = "10.240.0.0/20"
)

// attachment is one network of a pod, as Multus would attach it.
type attachment struct {
	network, ifName string
	conf            *libcni.PluginConfig
	addr            string
}

type pod struct {
	name string
	node *node
	ns   ns.NetNS
	atts []*attachment
}

func (p *pod) addr(network string) string {
	for _, a := range p.atts {
		if a.network == network {
			return a.addr
		}
	}
	return ""
}

// narrator prints the scenario for a person (make demo-cluster) in the
// seed demo's style; silent in plain test runs.
type narrator struct{ on bool }

func (n narrator) say(format string, args ...any) {
	if n.on {
		fmt.Printf("\n\033[1m"+format+"\033[0m\n", args...)
	}
}

func (n narrator) show(who, out string, cmd ...string) {
	if n.on {
		fmt.Printf("➜ %s$ %s\n%s", who, strings.Join(cmd, " "), out)
		if !strings.HasSuffix(out, "\n") && out != "" {
			fmt.Println()
		}
	}
}

// nodeConfs are the three networks' configurations as each node's plugin
// gets them: the management network from examples/cluster (a file of the
// node's CNI conf dir), net1 and net2 from the example NADs of deploy/examples. Each
// node has its own state, IPAM and runtime directories, as each node has its
// own filesystem in a real cluster.
func nodeConfs(t *testing.T, n *node, nads map[string]string) []*attachment {
	t.Helper()
	mgmtRaw, err := os.ReadFile(filepath.Join(kubetest.RepoRoot(), "examples", "cluster", "00-mgmt.conf"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(n.confDir, "00-mgmt.conf"), mgmtRaw, 0o644))
	base := filepath.Dir(n.runtimeDir)
	dirs := nettest.Dirs{Data: filepath.Join(base, "state"), Runtime: n.runtimeDir, IPAM: filepath.Join(base, "ipam")}
	var out []*attachment
	for _, a := range []struct{ network, ifName, raw string }{
		{"mgmt", "eth0", string(mgmtRaw)}, {"net1", "net1", nads["net1"]}, {"net2", "net2", nads["net2"]},
	} {
		var fields map[string]any
		require.NoError(t, json.Unmarshal([]byte(a.raw), &fields), a.network)
		out = append(out, &attachment{network: a.network, ifName: a.ifName, conf: nettest.Conf(t, dirs, fields)})
	}
	return out
}

// exampleNADs creates the example NADs of deploy/examples and returns their configs.
func exampleNADs(t *testing.T, s *suite) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range []string{"net1.yaml", "net2.yaml"} {
		objs, err := kubetest.ReadManifests(filepath.Join(kubetest.RepoRoot(), "deploy", "examples", f))
		require.NoError(t, err)
		for _, o := range objs {
			require.NoError(t, s.server.CreateObject(ctxT(t), o))
			cfg, _ := o.Object["spec"].(map[string]any)["config"].(string)
			out[o.GetName()] = cfg
		}
	}
	return out
}

func addPod(t *testing.T, n *node, rt *nettest.Runtime, name string, confs []*attachment) (*pod, error) {
	p := &pod{name: name, node: n, ns: nettest.NewNS(t)}
	for _, c := range confs {
		a := *c
		res, err := rt.Add(a.conf, &libcni.RuntimeConf{ContainerID: name, NetNS: p.ns.Path(), IfName: a.ifName,
			Args: [][2]string{{"IgnoreUnknown", "true"}, {"K8S_POD_NAMESPACE", "demo"}, {"K8S_POD_NAME", name}}})
		if err != nil {
			return p, fmt.Errorf("ADD %s on %s: %w", a.network, n.name, err)
		}
		a.addr = firstIPv4(res)
		p.atts = append(p.atts, &a)
		conf, r := a.conf, &libcni.RuntimeConf{ContainerID: name, NetNS: p.ns.Path(), IfName: a.ifName}
		t.Cleanup(func() { _ = rt.Del(conf, r) })
	}
	return p, nil
}

func firstIPv4(r *current.Result) string {
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() != nil {
			return ip.Address.IP.String()
		}
	}
	return ""
}

// TestCluster reproduces the seed's cluster demo with the agent instead of
// ansible: three nodes on one underlay, the same NADs everywhere, a pod per
// node with eth0/net1/net2, and every address reachable from every node and
// pod with strict reverse-path filtering; then a node goes away.
func TestCluster(t *testing.T) {
	s := setup(t)
	say := narrator{on: os.Getenv("MULTI_BRIDGE_DEMO") != ""}
	say.say("Cluster: a real kube-apiserver, three node namespaces on one underlay bridge (192.0.2.0/24), an outside host %s", outsideHost)
	nads := exampleNADs(t, s)
	c := newCluster(t, s)
	// The underlay's router leads to the outside host, which has no route
	// back to pods: only masquerading nodes reach it.
	outside := nettest.NewNS(t)
	nettest.Connect(t, nettest.End{NS: c.underlay, Name: "wan0", Addrs: []string{outsideGW + "/24"}},
		nettest.End{NS: outside, Name: "eth0", Addrs: []string{outsideHost + "/24"}})
	nettest.MustRun(t, outside, "ip", "route", "add", "192.0.2.0/24", "via", outsideGW)
	nettest.Sysctl(t, c.underlay, "net.ipv4.ip_forward", "1")

	nodes := []*node{
		c.addNode("node1", "192.0.2.11", "10.240.0.0/24"),
		c.addNode("node2", "192.0.2.12", "10.240.1.0/24"),
		c.addNode("node3", "192.0.2.13", "10.240.2.0/24"),
	}
	confs := map[*node][]*attachment{}
	runtimes := map[*node]*nettest.Runtime{}
	for _, n := range nodes {
		confs[n] = nodeConfs(t, n, nads)
		runtimes[n] = nettest.NewRuntime(t, n.ns)
	}

	say.say("Before the agent runs, ADD of a nodeSubnets network fails with a retryable error")
	_, err := addPod(t, nodes[0], runtimes[nodes[0]], "early", confs[nodes[0]][1:2])
	var cniErr *types.Error
	require.True(t, errors.As(err, &cniErr), "want a CNI error, got %v", err)
	assert.Equal(t, uint(types.ErrTryAgainLater), cniErr.Code)
	assert.Equal(t, `this node has no slice of network "net1"'s pool 10.240.16.0/20 yet`, cniErr.Msg)
	say.show("node1 (plugin)", fmt.Sprintf("CNI error %d: %s (%s)\n", cniErr.Code, cniErr.Msg, cniErr.Details), "cnitool add net1 ...")

	for _, n := range nodes {
		c.start(n)
	}
	eventually(t, converge, "every node has its three slices", func() (bool, string) {
		for _, n := range nodes {
			for _, network := range []string{"mgmt", "net1", "net2"} {
				if slicesFile(t, n, network) == "" {
					return false, fmt.Sprintf("%s has no slice of %s yet", n.name, network)
				}
			}
		}
		return true, ""
	})
	leases := map[string]map[string]string{"net1": leasesByNode(t, s, "net1"), "net2": leasesByNode(t, s, "net2")}
	for _, n := range nodes {
		assert.Equal(t, leases["net1"][n.name], slicesFile(t, n, "net1"))
		assert.Equal(t, leases["net2"][n.name], slicesFile(t, n, "net2"))
	}
	assert.Equal(t, "10.240.1.0/24", slicesFile(t, nodes[1], "mgmt"), "the management network's slice is the podCIDR")
	assert.ElementsMatch(t, []string{"10.240.16.0/24", "10.240.17.0/24", "10.240.18.0/24"}, mapValues(leases["net1"]))
	assert.ElementsMatch(t, []string{"10.240.32.0/24", "10.240.33.0/24", "10.240.34.0/24"}, mapValues(leases["net2"]))

	// expectRoutes: every other live node's three slices via its address.
	expectRoutes := func(n *node, live []*node) []string {
		var out []string
		for _, o := range live {
			if o == n {
				continue
			}
			out = append(out, fmt.Sprintf("%s via %s dev eth0", slicesFile(t, o, "mgmt"), o.ip))
			for _, network := range []string{"net1", "net2"} {
				out = append(out, fmt.Sprintf("%s via %s dev eth0", leases[network][o.name], o.ip))
			}
		}
		sort.Strings(out)
		return out
	}
	routesConverged := func(live []*node) func() (bool, string) {
		return func() (bool, string) {
			for _, n := range live {
				if ok, d := equalLines(expectRoutes(n, live), agentRoutes(t, n)); !ok {
					return false, n.name + ": " + d
				}
			}
			return true, ""
		}
	}
	eventually(t, converge, "routes between the nodes", routesConverged(nodes))
	// The health server: ready with its three leases and six routes.
	eventually(t, converge, "node1's agent ready", func() (bool, string) {
		code, body, err := nodes[0].agent.Get("/readyz")
		return err == nil && code == 200, fmt.Sprintf("%d %s %v", code, body, err)
	})
	code, body, err := nodes[0].agent.Get("/healthz")
	require.NoError(t, err)
	assert.Equal(t, 200, code, body)
	_, metrics, err := nodes[0].agent.Get("/metrics")
	require.NoError(t, err)
	for _, want := range []string{"multi_bridge_agent_networks 3\n", "multi_bridge_agent_leases_held 3\n", "multi_bridge_agent_routes_programmed 6\n", "multi_bridge_agent_reconcile_errors_total "} {
		assert.Contains(t, metrics, want)
	}
	say.say("SubnetLeases (kubectl get subnetleases)")
	if say.on {
		ls, err := s.server.Leases(ctxT(t), "")
		require.NoError(t, err)
		sort.Slice(ls, func(i, j int) bool { return ls[i].Name < ls[j].Name })
		fmt.Printf("%-24s %-8s %-16s %s\n", "NAME", "NETWORK", "SUBNET", "NODE")
		for _, l := range ls {
			fmt.Printf("%-24s %-8s %-16s %s\n", l.Name, l.Network, l.Subnet, l.Node)
		}
	}
	say.say("Routes on each node (the agent's have proto 201)")
	for _, n := range nodes {
		say.show(n.name, nettest.MustRun(t, n.ns, "ip", "route"), "ip", "route")
	}

	say.say("A pod on each node: eth0 (mgmt), net1, net2")
	var pods []*pod
	for i, n := range nodes {
		p, err := addPod(t, n, runtimes[n], fmt.Sprintf("netshoot%d", i+1), confs[n])
		require.NoError(t, err)
		pods = append(pods, p)
		for _, a := range p.atts {
			subnet := slicesFile(t, n, a.network)
			_, ipnet, _ := net.ParseCIDR(subnet)
			assert.True(t, ipnet.Contains(net.ParseIP(a.addr)), "%s %s address %s outside the node's slice %s", p.name, a.network, a.addr, subnet)
		}
		say.show(p.name+" on "+n.name, fmt.Sprintf("eth0 %s  net1 %s  net2 %s\n", p.addr("mgmt"), p.addr("net1"), p.addr("net2")), "addresses")
	}
	say.say("ip rule in each pod")
	for _, p := range pods {
		out := nettest.MustRun(t, p.ns, "ip", "rule")
		assert.Equal(t, []string{
			"0: from all lookup local",
			fmt.Sprintf("101: from %s lookup 1", p.addr("net1")),
			fmt.Sprintf("102: from %s lookup 2", p.addr("net2")),
			"32766: from all lookup main",
			"32767: from all lookup default",
		}, nettest.Lines(out), p.name)
		say.show(p.name, out, "ip", "rule")
	}

	pingOK := func(from ns.NetNS, who string, args ...string) {
		t.Helper()
		out, err := nettest.Ping(from, args...)
		assert.NoError(t, err, "%s: ping %v\n%s", who, args, out)
		if say.on {
			res := "ok"
			if err != nil {
				res = "FAILED"
			}
			fmt.Printf("➜ %s$ ping %s: %s\n", who, strings.Join(args, " "), res)
		}
	}
	say.say("From every node, every pod's three addresses (the seed's ping from a worker; rp_filter=1 on nodes)")
	for _, n := range nodes {
		for _, p := range pods {
			for _, a := range p.atts {
				pingOK(n.ns, n.name, a.addr)
			}
		}
	}
	say.say("From every pod, every other pod on each network, from its own address on that network")
	for _, p := range pods {
		for _, q := range pods {
			if p == q {
				continue
			}
			for _, network := range []string{"mgmt", "net1", "net2"} {
				pingOK(p.ns, p.name, "-I", p.addr(network), q.addr(network))
			}
		}
	}
	say.say("Pods reach the outside host %s (no route back to pods: the nodes masquerade)", outsideHost)
	for _, p := range pods {
		pingOK(p.ns, p.name, outsideHost)
		for _, network := range []string{"net1", "net2"} {
			pingOK(p.ns, p.name, "-I", p.addr(network), outsideHost)
		}
	}

	say.say("Pod-to-pod traffic between nodes keeps its source address (known failure 9)")
	for _, network := range []string{"mgmt", "net1", "net2"} {
		src, dst := pods[0], pods[1]
		got := udpSource(t, src.ns, src.addr(network), dst.ns, dst.addr(network))
		assert.Equal(t, src.addr(network), got, "%s: a datagram from %s on node1 to %s on node2", network, src.addr(network), dst.addr(network))
		say.show(dst.name, fmt.Sprintf("datagram from %s (sent from %s)\n", got, src.addr(network)), "udp listener on", dst.addr(network))
	}
	// The outside host sees the node's address instead.
	got := udpSource(t, pods[0].ns, pods[0].addr("net1"), outside, outsideHost)
	assert.Equal(t, nodes[0].ip, got, "traffic leaving the pool is masqueraded to the node's address")
	say.show("outside", fmt.Sprintf("datagram from %s (sent from %s)\n", got, pods[0].addr("net1")), "udp listener on", outsideHost)

	say.say("Delete node3: its leases are released and its routes leave every node")
	require.NoError(t, nodes[2].agent.Stop())
	require.NoError(t, s.server.DeleteNode(ctxT(t), "node3"))
	eventually(t, converge, "node3's leases released", func() (bool, string) {
		l1, l2 := leasesByNode(t, s, "net1"), leasesByNode(t, s, "net2")
		_, in1 := l1["node3"]
		_, in2 := l2["node3"]
		return !in1 && !in2, fmt.Sprintf("net1 %v net2 %v", l1, l2)
	})
	eventually(t, converge, "node3's routes gone", routesConverged(nodes[:2]))
	for _, n := range nodes[:2] {
		out := nettest.MustRun(t, n.ns, "ip", "route")
		assert.NotContains(t, out, "192.0.2.13", n.name)
		say.show(n.name, out, "ip", "route")
	}
	// The remaining pods still reach each other.
	pingOK(pods[0].ns, pods[0].name, "-I", pods[0].addr("net1"), pods[1].addr("net1"))
}

// udpSource sends a datagram from addr in namespace from to dst in
// namespace to and returns the source address the receiver saw.
func udpSource(t *testing.T, from ns.NetNS, src string, to ns.NetNS, dst string) string {
	t.Helper()
	var conn *net.UDPConn
	require.NoError(t, to.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(dst), Port: 9999})
		return err
	}))
	defer conn.Close()
	require.NoError(t, from.Do(func(ns.NetNS) error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP(dst), Port: 9999})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	}))
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 16)
	_, peer, err := conn.ReadFromUDP(buf)
	require.NoError(t, err, "no datagram from %s to %s", src, dst)
	return peer.IP.String()
}
