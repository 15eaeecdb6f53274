package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/lease"
	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// nadConfig is a multi-bridge network sliced per node.
func nadConfig(name, pool string, size int) string {
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"multi-bridge","bridge":"br-%s","isGateway":true,"ipMasq":true,`+
		`"nodeSubnets":{"pool":%q,"size":%d},"ipam":{"type":"host-local"}}`, name, name, pool, size)
}

func createNAD(t *testing.T, s *suite, name, pool string, size int) {
	t.Helper()
	require.NoError(t, s.server.CreateNAD(ctxT(t), "default", name, nadConfig(name, pool, size)))
}

// simulateNode creates a Node and leases it a slice of each network, as
// its agent would, without running one.
func simulateNode(t *testing.T, s *suite, name, ip string, nets ...lease.Request) []lease.Lease {
	t.Helper()
	node, err := s.server.CreateNode(ctxT(t), name, ip, "")
	require.NoError(t, err)
	var out []lease.Lease
	for _, r := range nets {
		r.Node, r.NodeUID = name, node.UID
		o, err := lease.NewClient(s.server.Dyn).Acquire(ctxT(t), r)
		require.NoError(t, err)
		out = append(out, o.Lease)
	}
	return out
}

func request(network, pool string, size int) lease.Request {
	return lease.Request{Network: network, Pool: netip.MustParsePrefix(pool), Size: size}
}

// leasesByNode lists a network's leases as node -> subnet.
func leasesByNode(t *testing.T, s *suite, network string) map[string]string {
	t.Helper()
	ls, err := s.server.Leases(ctxT(t), network)
	require.NoError(t, err)
	out := map[string]string{}
	for _, l := range ls {
		if prev, dup := out[l.Node]; dup {
			t.Fatalf("node %s holds two leases of %s: %s and %s", l.Node, network, prev, l.Subnet)
		}
		out[l.Node] = l.Subnet.String()
	}
	return out
}

// TestLeaseAcquireRace races agents' lease managers for the slices of small
// pools, many rounds, all starting at once: never two nodes on one slice,
// and the nodes that find the pool full get the error that says what to do.
func TestLeaseAcquireRace(t *testing.T) {
	s := setup(t)
	ctx := ctxT(t)
	client := lease.NewClient(s.server.Dyn)
	uids := map[string]string{}
	for i := 1; i <= 6; i++ {
		n, err := s.server.CreateNode(ctx, fmt.Sprintf("race-%d", i), fmt.Sprintf("192.0.2.%d", 10+i), "")
		require.NoError(t, err)
		uids[n.Name] = string(n.UID)
	}
	pool := netip.MustParsePrefix("10.240.16.0/28") // four /30 slices
	collisions := 0
	for round := 0; round < 30; round++ {
		racers := []int{2, 3, 6}[round%3]
		network := fmt.Sprintf("race%d", round)
		start := make(chan struct{})
		type result struct {
			node string
			out  lease.Outcome
			err  error
		}
		results := make([]result, racers)
		var wg sync.WaitGroup
		for i := 0; i < racers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				node := fmt.Sprintf("race-%d", i+1)
				<-start
				out, err := client.Acquire(ctx, lease.Request{Network: network, Pool: pool, Size: 30, Node: node, NodeUID: typesUID(uids[node])})
				results[i] = result{node, out, err}
			}()
		}
		close(start)
		wg.Wait()

		held := map[string]string{} // subnet -> node
		exhausted := 0
		for _, r := range results {
			var ex *lease.ExhaustedError
			if errors.As(r.err, &ex) {
				exhausted++
				assert.Equal(t, fmt.Sprintf(`network %q: pool 10.240.16.0/28 has no free /30 slice left for node %q (4 of 4 slices leased): `+
					`enlarge nodeSubnets.pool, use a longer nodeSubnets.size, or delete the SubnetLeases of nodes that are gone `+
					`(kubectl get subnetleases -l multi-bridge.cni.dev/network=%s)`, network, r.node, network), r.err.Error())
				continue
			}
			require.NoError(t, r.err, "round %d node %s", round, r.node)
			collisions += r.out.Collisions
			l := r.out.Lease
			assert.False(t, r.out.Kept)
			assert.True(t, pool.Contains(l.Subnet.Addr()) && l.Subnet.Bits() == 30, "slice %s outside the pool", l.Subnet)
			if other, dup := held[l.Subnet.String()]; dup {
				t.Fatalf("round %d: %s and %s both hold %s", round, other, r.node, l.Subnet)
			}
			held[l.Subnet.String()] = r.node
			assert.Equal(t, typesUID(uids[r.node]), l.OwnerUID, "owner reference to the Node")
		}
		assert.Equal(t, min(racers, 4), len(held), "round %d: every racer gets a slice while there are some", round)
		assert.Equal(t, max(racers-4, 0), exhausted, "round %d", round)
		// The API server holds exactly what the racers were told.
		inAPI := map[string]string{}
		for node, subnet := range leasesByNode(t, s, network) {
			inAPI[subnet] = node
		}
		assert.Equal(t, held, inAPI, "round %d", round)
	}
	t.Logf("%d Creates lost a race to another agent and moved on to the next slice", collisions)

	// A second Acquire of a node (an agent restart) keeps its lease.
	first, err := client.Acquire(ctx, lease.Request{Network: "race0", Pool: pool, Size: 30, Node: "race-1", NodeUID: typesUID(uids["race-1"])})
	require.NoError(t, err)
	assert.True(t, first.Kept)
	assert.Equal(t, leasesByNode(t, s, "race0")["race-1"], first.Lease.Subnet.String())
}

// TestAgentsRaceForSlices starts agent processes at the same time.
func TestAgentsRaceForSlices(t *testing.T) {
	t.Run("two agents, pool of four", func(t *testing.T) {
		s := setup(t)
		createNAD(t, s, "tiny", "10.240.16.0/28", 30)
		c := newCluster(t, s)
		a, b := c.addNode("node-a", "192.0.2.11", ""), c.addNode("node-b", "192.0.2.12", "")
		c.start(a)
		c.start(b)
		eventually(t, converge, "both nodes leased", func() (bool, string) {
			return slicesFile(t, a, "tiny") != "" && slicesFile(t, b, "tiny") != "", "files missing"
		})
		leases := leasesByNode(t, s, "tiny")
		assert.Equal(t, map[string]string{"node-a": slicesFile(t, a, "tiny"), "node-b": slicesFile(t, b, "tiny")}, leases)
		assert.ElementsMatch(t, []string{"10.240.16.0/30", "10.240.16.4/30"}, []string{leases["node-a"], leases["node-b"]})
		eventually(t, converge, "routes", func() (bool, string) {
			okA, dA := equalLines([]string{leases["node-b"] + " via 192.0.2.12 dev eth0"}, agentRoutes(t, a))
			okB, dB := equalLines([]string{leases["node-a"] + " via 192.0.2.11 dev eth0"}, agentRoutes(t, b))
			return okA && okB, dA + "\n" + dB
		})
	})

	t.Run("three agents, pool of two", func(t *testing.T) {
		s := setup(t)
		createNAD(t, s, "tiny", "10.240.16.0/29", 30)
		c := newCluster(t, s)
		nodes := []*node{c.addNode("node-a", "192.0.2.11", ""), c.addNode("node-b", "192.0.2.12", ""), c.addNode("node-c", "192.0.2.13", "")}
		for _, n := range nodes {
			c.start(n)
		}
		var loser *node
		eventually(t, converge, "two leases and a PoolExhausted event", func() (bool, string) {
			leases := leasesByNode(t, s, "tiny")
			if len(leases) != 2 {
				return false, fmt.Sprintf("leases %v", leases)
			}
			for _, n := range nodes {
				if _, ok := leases[n.name]; !ok {
					loser = n
				}
			}
			events, err := s.server.Events(ctxT(t), loser.name)
			require.NoError(t, err)
			want := fmt.Sprintf(`Warning PoolExhausted: network "tiny": pool 10.240.16.0/29 has no free /30 slice left for node %q (2 of 2 slices leased): `+
				`enlarge nodeSubnets.pool, use a longer nodeSubnets.size, or delete the SubnetLeases of nodes that are gone `+
				`(kubectl get subnetleases -l multi-bridge.cni.dev/network=tiny)`, loser.name)
			for _, e := range events {
				if e == want {
					return true, ""
				}
			}
			return false, fmt.Sprintf("events of %s: %q", loser.name, events)
		})
		assert.Equal(t, "", slicesFile(t, loser, "tiny"), "a node without a lease has no file: the plugin fails with a retryable error")
		leases := leasesByNode(t, s, "tiny")
		assert.ElementsMatch(t, []string{"10.240.16.0/30", "10.240.16.4/30"}, mapValues(leases))

		// A winner's node goes away: its lease is released and the node
		// that had none takes the freed slice.
		var gone *node
		for _, n := range nodes {
			if n != loser {
				gone = n
				break
			}
		}
		freed := leases[gone.name]
		require.NoError(t, gone.agent.Stop())
		require.NoError(t, s.server.DeleteNode(ctxT(t), gone.name))
		eventually(t, converge, "the freed slice goes to the node that had none", func() (bool, string) {
			l := leasesByNode(t, s, "tiny")
			return l[loser.name] == freed && slicesFile(t, loser, "tiny") == freed && len(l) == 2, fmt.Sprintf("leases %v", l)
		})
	})
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// TestNodeAddAndDelete: a new Node's slices become routes on every node; a
// deleted Node's leases are released and its routes leave every node.
func TestNodeAddAndDelete(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	createNAD(t, s, "net2", "10.240.32.0/20", 24)
	c := newCluster(t, s)
	nodes := []*node{c.addNode("node-a", "192.0.2.11", ""), c.addNode("node-b", "192.0.2.12", ""), c.addNode("node-c", "192.0.2.13", "")}
	for _, n := range nodes {
		c.start(n)
	}
	ips := map[string]string{"node-a": "192.0.2.11", "node-b": "192.0.2.12", "node-c": "192.0.2.13", "node-d": "192.0.2.14"}
	// expected are the routes node n must hold: every other node's slices.
	expected := func(n *node) []string {
		var out []string
		for _, network := range []string{"net1", "net2"} {
			for other, subnet := range leasesByNode(t, s, network) {
				if other != n.name {
					out = append(out, fmt.Sprintf("%s via %s dev eth0", subnet, ips[other]))
				}
			}
		}
		sort.Strings(out)
		return out
	}
	allConverged := func(routesPerNode int) func() (bool, string) {
		return func() (bool, string) {
			for _, n := range nodes {
				want := expected(n)
				if len(want) != routesPerNode {
					return false, fmt.Sprintf("%s: want %d routes from the leases, leases give %v", n.name, routesPerNode, want)
				}
				if ok, d := equalLines(want, agentRoutes(t, n)); !ok {
					return false, n.name + ": " + d
				}
			}
			return true, ""
		}
	}
	eventually(t, converge, "routes between three nodes", allConverged(4))
	assert.Len(t, leasesByNode(t, s, "net1"), 3)

	simulateNode(t, s, "node-d", ips["node-d"], request("net1", "10.240.16.0/20", 24), request("net2", "10.240.32.0/20", 24))
	eventually(t, converge, "node-d's slices routed on every node", allConverged(6))
	assert.Contains(t, agentRoutes(t, nodes[0]), leasesByNode(t, s, "net1")["node-d"]+" via 192.0.2.14 dev eth0")

	require.NoError(t, s.server.DeleteNode(ctxT(t), "node-d"))
	eventually(t, converge, "node-d's leases released", func() (bool, string) {
		l1, l2 := leasesByNode(t, s, "net1"), leasesByNode(t, s, "net2")
		_, in1 := l1["node-d"]
		_, in2 := l2["node-d"]
		return !in1 && !in2 && len(l1) == 3 && len(l2) == 3, fmt.Sprintf("net1 %v net2 %v", l1, l2)
	})
	eventually(t, converge, "node-d's routes gone from every node", allConverged(4))
	for _, n := range nodes {
		assert.NotContains(t, strings.Join(agentRoutes(t, n), "\n"), "192.0.2.14", n.name)
	}
	// Exactly one agent released them: the one after node-d in name order
	// (wrapping around to node-a).
	assert.Equal(t, 2, strings.Count(nodes[0].agent.Log(), `msg="released lease of deleted node"`), "node-a releases node-d's two leases")
	for _, n := range nodes[1:] {
		assert.NotContains(t, n.agent.Log(), "released lease of deleted node", n.name)
	}
}

// TestAgentRestartKeepsItsLease kills an agent (as a crash would) and
// starts it again: the node keeps the same lease object, and its routes
// stay in place while no agent runs.
func TestAgentRestartKeepsItsLease(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	// Another node holds the first slice, so "first free" is not what
	// makes the restarted agent end up on the same one.
	peer := simulateNode(t, s, "node-b", "192.0.2.12", request("net1", "10.240.16.0/20", 24))
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "")
	c.start(a)
	eventually(t, converge, "lease and route", func() (bool, string) {
		return slicesFile(t, a, "net1") != "" && len(agentRoutes(t, a)) == 1, fmt.Sprint(agentRoutes(t, a))
	})
	before, err := s.server.Leases(ctxT(t), "net1")
	require.NoError(t, err)
	mine := leaseOf(t, before, "node-a")
	assert.Equal(t, "10.240.17.0/24", mine.Subnet.String())
	assert.Equal(t, "10.240.17.0/24", slicesFile(t, a, "net1"))

	a.agent.Kill()
	// Free the first slice: an agent that leased anew would now take it.
	require.NoError(t, lease.NewClient(s.server.Dyn).Delete(ctxT(t), peer[0]))
	assert.Equal(t, []string{"10.240.16.0/24 via 192.0.2.12 dev eth0"}, agentRoutes(t, a), "routes stay while the agent is down")

	c.start(a)
	eventually(t, converge, "restarted agent kept its lease", func() (bool, string) {
		return strings.Contains(a.agent.Log(), `msg="kept this node's lease" node=node-a lease=net1.10-240-17-0-24`), "no 'kept' log line yet"
	})
	after, err := s.server.Leases(ctxT(t), "net1")
	require.NoError(t, err)
	again := leaseOf(t, after, "node-a")
	assert.Equal(t, mine.UID, again.UID, "the same object, never released")
	assert.Equal(t, mine.ResourceVersion, again.ResourceVersion, "not even updated")
	assert.Equal(t, "10.240.17.0/24", slicesFile(t, a, "net1"))
	// node-b's lease was deleted while the agent was down: its route goes.
	eventually(t, converge, "stale route removed", func() (bool, string) {
		r := agentRoutes(t, a)
		return len(r) == 0, fmt.Sprint(r)
	})
}

func leaseOf(t *testing.T, ls []lease.Lease, node string) lease.Lease {
	t.Helper()
	for _, l := range ls {
		if l.Node == node {
			return l
		}
	}
	t.Fatalf("no lease of %s in %v", node, ls)
	return lease.Lease{}
}

// TestRoutesReconverge changes the kernel's routes behind the agent's back
// and a Node's address under it.
func TestRoutesReconverge(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "")
	simulateNode(t, s, "node-b", "192.0.2.12", request("net1", "10.240.16.0/20", 24))
	simulateNode(t, s, "node-c", "192.0.2.13", request("net1", "10.240.16.0/20", 24))
	c.start(a)
	want := []string{"10.240.16.0/24 via 192.0.2.12 dev eth0", "10.240.17.0/24 via 192.0.2.13 dev eth0"}
	routesAre := func(want []string) func() (bool, string) {
		return func() (bool, string) { return equalLines(want, agentRoutes(t, a)) }
	}
	eventually(t, converge, "initial routes", routesAre(want))
	// A route that is not the agent's and not in any pool.
	nettest.MustRun(t, a.ns, "ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.1")

	t.Run("deleted by hand", func(t *testing.T) {
		nettest.MustRun(t, a.ns, "ip", "route", "del", "10.240.16.0/24")
		eventually(t, converge, "route back", routesAre(want))
	})
	t.Run("replaced by hand with a wrong gateway", func(t *testing.T) {
		nettest.MustRun(t, a.ns, "ip", "route", "replace", "10.240.17.0/24", "via", "192.0.2.99")
		eventually(t, converge, "right route back", routesAre(want))
		assert.Equal(t, []string{"10.240.17.0/24 via 192.0.2.13 dev eth0 proto 201"},
			nettest.Lines(nettest.MustRun(t, a.ns, "ip", "route", "show", "10.240.17.0/24")), "no second route left")
	})
	t.Run("a stale route of the agent's", func(t *testing.T) {
		nettest.MustRun(t, a.ns, "ip", "route", "add", "10.240.30.0/24", "via", "192.0.2.12", "proto", "201")
		eventually(t, converge, "stale route deleted", routesAre(want))
	})
	t.Run("a node's InternalIP changes", func(t *testing.T) {
		_, err := s.server.SetInternalIP(ctxT(t), "node-c", "192.0.2.33")
		require.NoError(t, err)
		eventually(t, converge, "route via the new address", routesAre([]string{"10.240.16.0/24 via 192.0.2.12 dev eth0", "10.240.17.0/24 via 192.0.2.33 dev eth0"}))
	})
	assert.Equal(t, []string{"203.0.113.0/24 via 192.0.2.1 dev eth0"},
		nettest.Lines(nettest.MustRun(t, a.ns, "ip", "route", "show", "203.0.113.0/24")), "other routes untouched")
}

// TestNodeOnAnotherSegment: a node whose InternalIP is on no subnet of
// this node gets no route (it would not work) but an Event saying why.
func TestNodeOnAnotherSegment(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "")
	simulateNode(t, s, "node-b", "192.0.2.12", request("net1", "10.240.16.0/20", 24))
	simulateNode(t, s, "far", otherSegmentIP, request("net1", "10.240.16.0/20", 24))
	c.start(a)
	want := "Warning NotOnLink: node far's InternalIP 198.51.100.20 is on no subnet this node is attached to (another L2 segment?): " +
		"no route to its slice 10.240.17.0/24 of network net1; put the nodes on one L2 segment or route the pool by other means"
	eventually(t, converge, "NotOnLink event", func() (bool, string) {
		events, err := s.server.Events(ctxT(t), "node-a")
		require.NoError(t, err)
		for _, e := range events {
			if e == want {
				return true, ""
			}
		}
		return false, fmt.Sprintf("events %q", events)
	})
	assert.Equal(t, []string{"10.240.16.0/24 via 192.0.2.12 dev eth0"}, agentRoutes(t, a), "a route to node-b, none to far")
	assert.Empty(t, nettest.Lines(nettest.MustRun(t, a.ns, "ip", "route", "show", "10.240.17.0/24")))

	// Once far is on the segment, it is routed.
	_, err := s.server.SetInternalIP(ctxT(t), "far", "192.0.2.20")
	require.NoError(t, err)
	eventually(t, converge, "far routed", func() (bool, string) {
		return equalLines([]string{"10.240.16.0/24 via 192.0.2.12 dev eth0", "10.240.17.0/24 via 192.0.2.20 dev eth0"}, agentRoutes(t, a))
	})
}

func typesUID(s string) types.UID { return types.UID(s) }

// TestNodeRecreatedAdoptsItsLease: a Node deleted and registered again under
// its name (a reinstalled kubelet) has a new UID; the node's agent keeps its
// lease and points the owner reference at the new Node, so a garbage
// collector does not take it away.
func TestNodeRecreatedAdoptsItsLease(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "")
	c.start(a)
	eventually(t, converge, "lease", func() (bool, string) { return slicesFile(t, a, "net1") != "", "no file" })
	ls, err := s.server.Leases(ctxT(t), "net1")
	require.NoError(t, err)
	before := leaseOf(t, ls, "node-a")

	require.NoError(t, s.server.DeleteNode(ctxT(t), "node-a"))
	n, err := s.server.CreateNode(ctxT(t), "node-a", "192.0.2.11", "")
	require.NoError(t, err)
	require.NotEqual(t, before.OwnerUID, n.UID)
	eventually(t, converge, "lease adopted by the new Node", func() (bool, string) {
		ls, err := s.server.Leases(ctxT(t), "net1")
		require.NoError(t, err)
		l := leaseOf(t, ls, "node-a")
		return l.UID == before.UID && l.OwnerUID == n.UID, fmt.Sprintf("lease %s uid %s owner %s", l.Name, l.UID, l.OwnerUID)
	})
	assert.Equal(t, before.Subnet.String(), slicesFile(t, a, "net1"))
}

// TestIPv6RoutesConvergeAndStay: nodes with IPv6 InternalIPs and an IPv6
// pool. The kernel reports IPv6 routes added without a metric with metric
// 1024; the agent took its own routes for foreign ones and deleted and
// re-added them forever (thousands of reconciles a second). Converged
// agents must stop: their counters stand still.
func TestIPv6RoutesConvergeAndStay(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net6", "fd00:10:240:1000::/56", 64)
	c := newCluster(t, s)
	a := c.addNode("node-a", "2001:db8::11", "")
	b := c.addNode("node-b", "2001:db8::12", "")
	// No periodic resync during the test: every reconcile is triggered by
	// a change.
	c.start(a, "--resync", "10m")
	eventually(t, converge, "node-a leased", func() (bool, string) { return slicesFile(t, a, "net6") != "", "no file" })
	c.start(b, "--resync", "10m")
	eventually(t, converge, "routes both ways", func() (bool, string) {
		okA, dA := equalLines([]string{"fd00:10:240:1001::/64 via 2001:db8::12 dev eth0 metric 1024 pref medium"}, agentRoutes6(t, a))
		okB, dB := equalLines([]string{"fd00:10:240:1000::/64 via 2001:db8::11 dev eth0 metric 1024 pref medium"}, agentRoutes6(t, b))
		return okA && okB, dA + "\n" + dB
	})
	assert.Equal(t, "fd00:10:240:1000::/64", slicesFile(t, a, "net6"))
	assert.Equal(t, "fd00:10:240:1001::/64", slicesFile(t, b, "net6"))

	counters := func() string {
		var out []string
		for _, n := range []*node{a, b} {
			for _, m := range []string{"reconciles_total", "routes_added_total", "routes_deleted_total"} {
				out = append(out, n.name+" "+m+" "+metric(t, n, "multi_bridge_agent_"+m))
			}
		}
		return strings.Join(out, "\n")
	}
	eventually(t, converge, "counters stand still for two seconds", func() (bool, string) {
		before := counters()
		time.Sleep(2 * time.Second)
		after := counters()
		return before == after, "before:\n" + before + "\nafter:\n" + after
	})
	for _, n := range []*node{a, b} {
		assert.Equal(t, "1", metric(t, n, "multi_bridge_agent_routes_added_total"), n.name)
		assert.Equal(t, "0", metric(t, n, "multi_bridge_agent_routes_deleted_total"), n.name)
	}
	assert.Equal(t, []string{"fd00:10:240:1001::/64 via 2001:db8::12 dev eth0 metric 1024 pref medium"}, agentRoutes6(t, a))
}

// TestLostLeaseTakesTheOldSliceAgain: a node whose lease went (deleted by
// hand, or released while its Node was deleted and registered again) took
// the first free slice, so its running pods' addresses could end up on
// another node. It takes the slice of its node subnet file again when that
// one is free, and says so when it cannot.
func TestLostLeaseTakesTheOldSliceAgain(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	peer := simulateNode(t, s, "node-b", "192.0.2.12", request("net1", "10.240.16.0/20", 24))
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "")
	c.start(a)
	eventually(t, converge, "lease", func() (bool, string) { return slicesFile(t, a, "net1") == "10.240.17.0/24", slicesFile(t, a, "net1") })
	client := lease.NewClient(s.server.Dyn)
	// A lower slice becomes free; then node-a's lease is deleted by hand.
	require.NoError(t, client.Delete(ctxT(t), peer[0]))
	ls, err := s.server.Leases(ctxT(t), "net1")
	require.NoError(t, err)
	old := leaseOf(t, ls, "node-a")
	require.NoError(t, client.Delete(ctxT(t), old))
	eventually(t, converge, "node-a leased again", func() (bool, string) {
		ls, err := s.server.Leases(ctxT(t), "net1")
		require.NoError(t, err)
		return len(ls) == 1 && ls[0].Node == "node-a" && ls[0].UID != old.UID, fmt.Sprint(ls)
	})
	ls, err = s.server.Leases(ctxT(t), "net1")
	require.NoError(t, err)
	assert.Equal(t, "10.240.17.0/24", ls[0].Subnet.String(), "its old slice, not the first free one")
	assert.Equal(t, "10.240.17.0/24", slicesFile(t, a, "net1"))

	// While its agent is down, node-a's lease goes and another node takes
	// its slice: node-a gets another one, with a Warning.
	a.agent.Kill()
	require.NoError(t, client.Delete(ctxT(t), ls[0]))
	taker := request("net1", "10.240.16.0/20", 24)
	taker.Prefer = netip.MustParsePrefix("10.240.17.0/24")
	simulateNode(t, s, "node-c", "192.0.2.13", taker)
	c.start(a)
	waitEvent(t, s, "node-a", "Warning SubnetChanged: this node's slice of network net1 changed from 10.240.17.0/24 to 10.240.16.0/24: "+
		"pods on this node that still have addresses of 10.240.17.0/24 must be restarted (those addresses may be another node's now)")
	assert.Equal(t, map[string]string{"node-a": "10.240.16.0/24", "node-c": "10.240.17.0/24"}, leasesByNode(t, s, "net1"))
	assert.Equal(t, "10.240.16.0/24", slicesFile(t, a, "net1"))
	events, err := s.server.Events(ctxT(t), "node-a")
	require.NoError(t, err)
	assert.Equal(t, 1, strings.Count(strings.Join(events, "\n"), "SubnetChanged"), "one change, one Warning: %q", events)
}

// TestRoutesRepairedWhileTheAPIServerHangs: API calls in the reconcile
// loop had no deadline, so a hung (SIGSTOPped) API server held the loop for
// half a minute and more, and a route deleted meanwhile stayed missing.
// Routes are reconciled from the informers' caches first, and the API
// calls of a reconcile are bounded (--api-timeout).
func TestRoutesRepairedWhileTheAPIServerHangs(t *testing.T) {
	s := setup(t)
	// A full pool: every reconcile of node-a asks the API server for a
	// free slice.
	createNAD(t, s, "tiny", "10.240.16.0/29", 30)
	simulateNode(t, s, "node-b", "192.0.2.12", request("tiny", "10.240.16.0/29", 30))
	simulateNode(t, s, "node-c", "192.0.2.13", request("tiny", "10.240.16.0/29", 30))
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "")
	c.start(a, "--api-timeout", "2s")
	want := []string{"10.240.16.0/30 via 192.0.2.12 dev eth0", "10.240.16.4/30 via 192.0.2.13 dev eth0"}
	eventually(t, converge, "routes", func() (bool, string) { return equalLines(want, agentRoutes(t, a)) })
	waitEvent(t, s, "node-a", `Warning PoolExhausted: network "tiny": pool 10.240.16.0/29 has no free /30 slice left for node "node-a" (2 of 2 slices leased): `+
		`enlarge nodeSubnets.pool, use a longer nodeSubnets.size, or delete the SubnetLeases of nodes that are gone `+
		`(kubectl get subnetleases -l multi-bridge.cni.dev/network=tiny)`)

	resume, err := s.server.Pause()
	require.NoError(t, err)
	t.Cleanup(resume)
	nettest.MustRun(t, a.ns, "ip", "route", "del", "10.240.16.0/30")
	eventually(t, converge, "route repaired while the API server hangs", func() (bool, string) { return equalLines(want, agentRoutes(t, a)) })
	// That reconcile now waits for the API server: the next repair comes
	// once its API calls time out.
	nettest.MustRun(t, a.ns, "ip", "route", "del", "10.240.16.4/30")
	eventually(t, converge, "route repaired after the API calls timed out", func() (bool, string) { return equalLines(want, agentRoutes(t, a)) })
	assert.Contains(t, a.agent.Log(), `level=ERROR msg="reconcile failed; retrying"`)
	assert.Contains(t, a.agent.Log(), "context deadline exceeded")
	resume()

	// And the agent is back to normal once the API server answers.
	nettest.MustRun(t, a.ns, "ip", "route", "del", "10.240.16.0/30")
	eventually(t, converge, "route repaired", func() (bool, string) { return equalLines(want, agentRoutes(t, a)) })
	eventually(t, converge, "ready again", func() (bool, string) {
		code, body, err := a.agent.Get("/readyz")
		return err == nil && code == 200, fmt.Sprint(code, body, err)
	})
}
