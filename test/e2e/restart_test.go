package e2e

// An agent that starts while the definitions of a network are invalid: it
// knows no valid version of them, so what outlives it (the cluster's
// SubnetLeases, this node's subnet file and podCIDR) defines the network.

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/pkg/nodesubnet"
	"github.com/multi-bridge-cni/multi-bridge/test/kubetest"
)

// net6: an IPv6 network; node-a leases first.
const (
	net6Pool  = "fd00:10:240:1000::/56"
	net6Other = "fd00:10:240:2000::/56" // the pool of a newer NAD of the same network name
	net6A     = "fd00:10:240:1000::/64"
	net6B     = "fd00:10:240:1001::/64"
	// notJSON is the verifier's edit: kubectl patch net-attach-def net6
	// --type=merge -p '{"spec":{"config":"{not json"}}'.
	notJSON    = "{not json"
	notJSONErr = `nad:default/net6: CNI configuration is not a JSON object: invalid character 'n' looking for beginning of object key string`
)

// net6Nodes starts node-a (2001:db8::11) and node-b (2001:db8::12) and
// waits for net6's routes between them.
func net6Nodes(t *testing.T, s *suite) (*testCluster, *node, *node) {
	t.Helper()
	c := newCluster(t, s)
	a := c.addNode("node-a", "2001:db8::11", "")
	b := c.addNode("node-b", "2001:db8::12", "")
	c.start(a)
	eventually(t, converge, "node-a leased", func() (bool, string) { return slicesFile(t, a, "net6") == net6A, slicesFile(t, a, "net6") })
	c.start(b)
	eventually(t, converge, "net6 routed both ways", net6Routed(t, a, b))
	return c, a, b
}

func net6Routed(t *testing.T, a, b *node) func() (bool, string) {
	return func() (bool, string) {
		okA, dA := equalLines([]string{net6B + " via 2001:db8::12 dev eth0 metric 1024 pref medium"}, agentRoutes6(t, a))
		okB, dB := equalLines([]string{net6A + " via 2001:db8::11 dev eth0 metric 1024 pref medium"}, agentRoutes6(t, b))
		return okA && okB, dA + "\n" + dB
	}
}

// waitReadyz waits until n's /readyz answers 200 with the lines want (the
// problem lines come in any order).
func waitReadyz(t *testing.T, n *node, want ...string) {
	t.Helper()
	sort.Strings(want)
	eventually(t, converge, n.name+" /readyz", func() (bool, string) {
		code, body, err := n.agent.Get("/readyz")
		if err != nil {
			return false, err.Error()
		}
		lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
		sort.Strings(lines)
		ok, detail := equalLines(want, lines)
		return code == 200 && ok, fmt.Sprintf("%d %s", code, detail)
	})
}

// sliceFileBytes is n's node subnet file of network as it is on disk.
func sliceFileBytes(t *testing.T, n *node, network string) string {
	t.Helper()
	b, err := os.ReadFile(nodesubnet.Path(nodesubnet.Dir(n.runtimeDir), network))
	require.NoError(t, err)
	return string(b)
}

// assertQuietRestart checks what a restarted agent (log: its lines only)
// did after its first reconciles: nothing to the routes or the leases.
func assertQuietRestart(t *testing.T, n *node, log string) {
	t.Helper()
	for _, m := range []string{"routes_added_total", "routes_deleted_total", "leases_acquired_total", "leases_released_total"} {
		assert.Equal(t, "0", metric(t, n, "multi_bridge_agent_"+m), "%s %s", n.name, m)
	}
	for _, line := range []string{`msg="routes changed"`, `msg="leased a slice"`, `msg="released this node's lease`, `msg="node subnet file written"`, `reason=SubnetChanged`} {
		assert.NotContains(t, log, line, n.name)
	}
}

// leaseEvents are n's Events about its own leases and slice.
func leaseEvents(t *testing.T, s *suite, n *node) []string {
	t.Helper()
	events, err := s.server.Events(ctxT(t), n.name)
	require.NoError(t, err)
	var out []string
	for _, e := range events {
		for _, r := range []string{"SubnetLeased", "SubnetReleased", "SubnetChanged"} {
			if strings.Contains(e, " "+r+": ") {
				out = append(out, e)
			}
		}
	}
	return out
}

// TestAgentRestartWhileTheNADIsInvalid: the verifier's scenario. While
// net6's only NAD held "{not json", a restarted agent knew no valid version
// of it: it deleted its routes to the other nodes ("routes changed ...
// deleted=2") and said "ok: 0 of 0 networks leased", while the other nodes
// kept routing to it. Its SubnetLeases define the network now: nothing
// changes but the Warning.
func TestAgentRestartWhileTheNADIsInvalid(t *testing.T) {
	s := setup(t)
	require.NoError(t, s.server.CreateNAD(ctxT(t), "default", "net6", nadConfig("net6", net6Pool, 64)))
	c, a, b := net6Nodes(t, s)
	before := leaseIDs(t, s, "net6")
	fileA := sliceFileBytes(t, a, "net6")

	require.NoError(t, s.server.UpdateNADConfig(ctxT(t), "default", "net6", notJSON))
	kept := `Warning InvalidNetworkConfig: keeping the last valid definition of nad:default/net6 (network net6: pool ` + net6Pool +
		` in /64 slices) while it is invalid: ` + notJSONErr
	for _, n := range []*node{a, b} {
		waitEvent(t, s, n.name, kept)
	}

	off := c.restart(a)
	waitReadyz(t, a, "ok: 1 of 1 networks leased, 1 routes", "problem: InvalidNetworkConfig x1")
	waitEvent(t, s, "node-a", `Warning InvalidNetworkConfig: keeping network net6 (pool `+net6Pool+` in /64 slices, `+
		`as this node's SubnetLease net6.fd00-10-240-1000---64 records it) while nad:default/net6, which names it, `+
		`is invalid and no valid version of it is known to this agent: `+notJSONErr)
	log := a.agent.Log()[off:]
	assert.Contains(t, log, `msg="kept this node's lease" node=node-a lease=net6.fd00-10-240-1000---64`)
	assertQuietRestart(t, a, log)
	ok, detail := net6Routed(t, a, b)()
	assert.True(t, ok, "routes stay: %s", detail)
	assert.Equal(t, before, leaseIDs(t, s, "net6"), "no lease released, re-created or updated")
	assert.Equal(t, fileA, sliceFileBytes(t, a, "net6"))
	waitReadyz(t, b, "ok: 1 of 1 networks leased, 1 routes", "problem: InvalidNetworkConfig x1")

	// Fixed: the problem goes away everywhere, and still nothing moved.
	require.NoError(t, s.server.UpdateNADConfig(ctxT(t), "default", "net6", nadConfig("net6", net6Pool, 64)))
	for _, n := range []*node{a, b} {
		waitReadyz(t, n, "ok: 1 of 1 networks leased, 1 routes")
	}
	assertQuietRestart(t, a, a.agent.Log()[off:])
	ok, detail = net6Routed(t, a, b)()
	assert.True(t, ok, detail)
	assert.Equal(t, before, leaseIDs(t, s, "net6"))
}

// TestAgentRestartWhileTheNADIsInvalidKeepsItsPool: the verifier's worse
// scenario. With a newer other/net6 of another pool (ignored while
// default/net6 was valid), an agent restarted while default/net6 was
// invalid took other/net6 for the network: it released its lease, leased a
// slice of the other pool and rewrote its subnet file, while the other
// nodes stayed on the first pool. The network's leases stand in for
// default/net6, at its place in the order: other/net6 stays ignored.
func TestAgentRestartWhileTheNADIsInvalidKeepsItsPool(t *testing.T) {
	s := setup(t)
	require.NoError(t, s.server.CreateNAD(ctxT(t), "default", "net6", nadConfig("net6", net6Pool, 64)))
	c, a, b := net6Nodes(t, s)
	before := leaseIDs(t, s, "net6")
	require.Len(t, before, 2)
	fileA := sliceFileBytes(t, a, "net6")
	leased := "Normal SubnetLeased: leased " + net6A + " of network net6 (pool " + net6Pool + ") as SubnetLease net6.fd00-10-240-1000---64"
	waitEvent(t, s, "node-a", leased)
	eventsA := leaseEvents(t, s, a)
	assert.Equal(t, []string{leased}, eventsA)

	afterCreation(t, s, "default", "net6")
	require.NoError(t, s.server.CreateNAD(ctxT(t), "other", "net6", nadConfig("net6", net6Other, 64)))
	conflict := `Warning NetworkConflict: ignoring nad:other/net6: it defines network "net6" as pool ` + net6Other + ` in /64 slices, ` +
		`but the established definition nad:default/net6 as pool ` + net6Pool + ` in /64 slices; make it slice alike, rename its network or delete it`
	for _, n := range []*node{a, b} {
		waitEvent(t, s, n.name, conflict)
	}
	require.NoError(t, s.server.UpdateNADConfig(ctxT(t), "default", "net6", notJSON))
	for _, n := range []*node{a, b} {
		waitReadyz(t, n, "ok: 1 of 1 networks leased, 1 routes", "problem: InvalidNetworkConfig x1", "problem: NetworkConflict x1")
	}

	off := c.restart(a)
	waitReadyz(t, a, "ok: 1 of 1 networks leased, 1 routes", "problem: InvalidNetworkConfig x1", "problem: NetworkConflict x1")
	waitEvent(t, s, "node-a", `Warning InvalidNetworkConfig: keeping network net6 (pool `+net6Pool+` in /64 slices, `+
		`as this node's SubnetLease net6.fd00-10-240-1000---64 records it) while nad:default/net6, which names it, `+
		`is invalid and no valid version of it is known to this agent: `+notJSONErr)
	log := a.agent.Log()[off:]
	assert.Contains(t, log, `level=WARN msg="ignoring nad:other/net6: it defines network \"net6\" as pool `+net6Other)
	assertQuietRestart(t, a, log)
	assert.Equal(t, before, leaseIDs(t, s, "net6"), "no lease released, re-created or updated")
	assert.Equal(t, map[string]string{"node-a": net6A, "node-b": net6B}, leasesByNode(t, s, "net6"), "no lease of the other pool")
	assert.Equal(t, fileA, sliceFileBytes(t, a, "net6"))
	assert.Equal(t, eventsA, leaseEvents(t, s, a), "no SubnetReleased, SubnetLeased or SubnetChanged")
	ok, detail := net6Routed(t, a, b)()
	assert.True(t, ok, detail)
}

// TestAgentRestartWhileAConfFileIsInvalid: the management network is a
// file of the node's CNI conf dir and takes its slices from Node podCIDRs,
// so it has no leases. An agent started while that file was cut short (a
// half-written file) dropped the network and deleted its routes to the
// other nodes' podCIDRs. This node's subnet file and podCIDR define it now.
func TestAgentRestartWhileAConfFileIsInvalid(t *testing.T) {
	s := setup(t)
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "10.240.0.0/24")
	b := c.addNode("node-b", "192.0.2.12", "10.240.1.0/24")
	mgmt, err := os.ReadFile(filepath.Join(kubetest.RepoRoot(), "examples", "cluster", "00-mgmt.conf"))
	require.NoError(t, err)
	for _, n := range []*node{a, b} {
		require.NoError(t, os.WriteFile(filepath.Join(n.confDir, "00-mgmt.conf"), mgmt, 0o644))
		c.start(n)
	}
	routed := func() (bool, string) {
		okA, dA := equalLines([]string{"10.240.1.0/24 via 192.0.2.12 dev eth0"}, agentRoutes(t, a))
		okB, dB := equalLines([]string{"10.240.0.0/24 via 192.0.2.11 dev eth0"}, agentRoutes(t, b))
		return okA && okB, dA + "\n" + dB
	}
	eventually(t, converge, "mgmt routed both ways", routed)
	fileA := sliceFileBytes(t, a, "mgmt")
	assert.Equal(t, `{"network":"mgmt","node":"node-a","pool":"10.240.0.0/20","subnet":"10.240.0.0/24"}`, fileA)

	require.NoError(t, a.agent.Stop())
	conf := filepath.Join(a.confDir, "00-mgmt.conf")
	cut := strings.Index(string(mgmt), `"bridge"`)
	require.NoError(t, os.WriteFile(conf, mgmt[:cut], 0o644))
	off := len(a.agent.Log())
	c.start(a)
	waitReadyz(t, a, "ok: 1 of 1 networks leased, 1 routes", "problem: InvalidNetworkConfig x1")
	waitEvent(t, s, "node-a", `Warning InvalidNetworkConfig: keeping network mgmt (pool 10.240.0.0/20 from Node podCIDRs, `+
		`as this node's node subnet file and podCIDR record it) while file:`+conf+`, which names it, `+
		`is invalid and no valid version of it is known to this agent: file:`+conf+`: CNI configuration is not a JSON object: unexpected end of JSON input`)
	assertQuietRestart(t, a, a.agent.Log()[off:])
	ok, detail := routed()
	assert.True(t, ok, "routes stay: %s", detail)
	assert.Equal(t, fileA, sliceFileBytes(t, a, "mgmt"))
}
