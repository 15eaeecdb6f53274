package e2e

// Network definitions the agent must not use as they are: invalid ones,
// conflicting ones, and ones whose name is a path.

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent"
)

// waitEvent waits until node has an Event "Type Reason: message" equal to want.
func waitEvent(t *testing.T, s *suite, node, want string) {
	t.Helper()
	eventually(t, converge, "event on "+node, func() (bool, string) {
		events, err := s.server.Events(ctxT(t), node)
		require.NoError(t, err)
		for _, e := range events {
			if e == want {
				return true, ""
			}
		}
		return false, fmt.Sprintf("want %q, events %q", want, events)
	})
}

// filesUnder lists the regular files below dir, relative to it.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		out = append(out, rel)
		return err
	}))
	sort.Strings(out)
	return out
}

// TestNetworkNameThatIsAPath: a NAD whose network name is "../../escape"
// made every agent write (and, once its pool was full, delete) a .json file
// two directories above its runtime dir's subnets directory. Now the
// definition is refused like any invalid one: a Warning Event and a log
// line, no file anywhere, other networks served.
func TestNetworkNameThatIsAPath(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	require.NoError(t, s.server.CreateNAD(ctxT(t), "default", "escape", `{"cniVersion":"1.1.0","name":"../../escape","type":"multi-bridge",`+
		`"bridge":"br-escape","nodeSubnets":{"pool":"10.240.64.0/20","size":24},"ipam":{"type":"host-local"}}`))
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "")
	b := c.addNode("node-b", "192.0.2.12", "")
	// <runtimeDir>/subnets/../../escape.json: the file next to the
	// runtime dir. One is there already, as something of the node's own.
	base := filepath.Dir(a.runtimeDir)
	victim := filepath.Join(base, "escape.json")
	require.NoError(t, os.WriteFile(victim, []byte("the node's own file\n"), 0o644))
	c.start(a)
	eventually(t, converge, "node-a leased", func() (bool, string) { return slicesFile(t, a, "net1") != "", "no file" })
	c.start(b)

	eventually(t, converge, "node-b leased", func() (bool, string) { return slicesFile(t, b, "net1") != "", "no file" })
	got, err := os.ReadFile(victim)
	require.NoError(t, err)
	assert.Equal(t, "the node's own file\n", string(got))
	assert.Equal(t, []string{"agent.log", "escape.json", "run/subnets/net1.json"}, filesUnder(t, base))
	eventually(t, converge, "net1 routed both ways", func() (bool, string) {
		okA, dA := equalLines([]string{"10.240.17.0/24 via 192.0.2.12 dev eth0"}, agentRoutes(t, a))
		okB, dB := equalLines([]string{"10.240.16.0/24 via 192.0.2.11 dev eth0"}, agentRoutes(t, b))
		return okA && okB, dA + "\n" + dB
	})
	assert.Equal(t, map[string]string{"node-a": "10.240.16.0/24", "node-b": "10.240.17.0/24"}, leasesByNode(t, s, "net1"))
	all, err := s.server.Leases(ctxT(t), "")
	require.NoError(t, err)
	assert.Len(t, all, 2, "no lease of the refused network: %v", all)
	want := `Warning InvalidNetworkConfig: ignoring an invalid network definition: nad:default/escape: invalid "name" "../../escape": ` +
		`CNI allows only letters, digits, '_', '.' and '-' in a network name, starting with a letter or digit; rename the network (e.g. "net1")`
	for _, n := range []*node{a, b} {
		waitEvent(t, s, n.name, want)
	}
	assert.Contains(t, a.agent.Log(), `level=WARN msg="ignoring an invalid network definition: nad:default/escape: invalid \"name\" \"../../escape\"`)
}

// leaseIDs are a network's leases as node -> "subnet uid resourceVersion":
// equal maps mean not one lease was released, re-created or updated.
func leaseIDs(t *testing.T, s *suite, network string) map[string]string {
	t.Helper()
	ls, err := s.server.Leases(ctxT(t), network)
	require.NoError(t, err)
	out := map[string]string{}
	for _, l := range ls {
		out[l.Node] = fmt.Sprintf("%s %s %s", l.Subnet, l.UID, l.ResourceVersion)
	}
	return out
}

// twoNodes starts node-a (which leases first) and node-b, and waits for
// net1's routes between them (net1 10.240.16.0/20: node-a .16, node-b .17).
func twoNodes(t *testing.T, s *suite) (*testCluster, *node, *node) {
	t.Helper()
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "")
	b := c.addNode("node-b", "192.0.2.12", "")
	c.start(a)
	eventually(t, converge, "node-a leased", func() (bool, string) { return slicesFile(t, a, "net1") != "", "no file" })
	c.start(b)
	eventually(t, converge, "net1 routed both ways", net1Routed(t, a, b))
	return c, a, b
}

func net1Routed(t *testing.T, a, b *node) func() (bool, string) {
	return func() (bool, string) {
		okA, dA := equalLines([]string{"10.240.17.0/24 via 192.0.2.12 dev eth0"}, agentRoutes(t, a))
		okB, dB := equalLines([]string{"10.240.16.0/24 via 192.0.2.11 dev eth0"}, agentRoutes(t, b))
		return okA && okB, dA + "\n" + dB
	}
}

// TestNewerNADCannotTakeOverANetwork: NADs of one network name in any
// namespace used to be merged in namespace/name order, so a new aaa/net1
// with another pool made every node release its net1 lease. The
// established (oldest) definition wins; the newer one is reported and
// changes nothing.
func TestNewerNADCannotTakeOverANetwork(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	_, a, b := twoNodes(t, s)
	before := leaseIDs(t, s, "net1")

	// creationTimestamp counts seconds: the new NAD is newer only from
	// the next second on (within one second, namespace/name decides).
	afterCreation(t, s, "default", "net1")
	require.NoError(t, s.server.CreateNAD(ctxT(t), "aaa", "net1", nadConfig("net1", "10.240.64.0/20", 24)))
	want := `Warning NetworkConflict: ignoring nad:aaa/net1: it defines network "net1" as pool 10.240.64.0/20 in /24 slices, ` +
		`but the established definition nad:default/net1 as pool 10.240.16.0/20 in /24 slices; make it slice alike, rename its network or delete it`
	for _, n := range []*node{a, b} {
		waitEvent(t, s, n.name, want)
		eventually(t, converge, "the conflict counted", func() (bool, string) {
			v := metric(t, n, `multi_bridge_agent_problems{reason="NetworkConflict"}`)
			return v == "1", n.name + ": " + v
		})
		assert.Contains(t, n.agent.Log(), `level=WARN msg="ignoring nad:aaa/net1: it defines network \"net1\" as pool 10.240.64.0/20`)
		assert.NotContains(t, n.agent.Log(), "released this node's lease", n.name)
	}
	assert.Equal(t, before, leaseIDs(t, s, "net1"), "no lease released or changed")
	assert.Equal(t, "10.240.16.0/24", slicesFile(t, a, "net1"))
	assert.Equal(t, "10.240.17.0/24", slicesFile(t, b, "net1"))
	ok, detail := net1Routed(t, a, b)()
	assert.True(t, ok, detail)
}

// afterCreation waits until the clock is past the second in which the NAD
// namespace/name was created, so that a NAD created next is newer.
func afterCreation(t *testing.T, s *suite, namespace, name string) {
	t.Helper()
	u, err := s.server.Dyn.Resource(agent.NADResource()).Namespace(namespace).Get(ctxT(t), name, metav1.GetOptions{})
	require.NoError(t, err)
	created := u.GetCreationTimestamp().Time
	require.False(t, created.IsZero())
	time.Sleep(time.Until(created.Add(time.Second)))
}

// TestOverlappingPoolRefused: net1 10.240.16.0/20 and net3 10.240.16.0/21
// leased the same addresses to different nodes. The network whose pool
// overlaps an established network's is refused.
func TestOverlappingPoolRefused(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	_, a, b := twoNodes(t, s)
	before := leaseIDs(t, s, "net1")

	afterCreation(t, s, "default", "net1")
	createNAD(t, s, "net3", "10.240.16.0/21", 24)
	want := `Warning NetworkConflict: ignoring network "net3" of nad:default/net3: its pool 10.240.16.0/21 overlaps pool 10.240.16.0/20 ` +
		`of the established network "net1" of nad:default/net1, so both would lease the same addresses to different nodes; give it a pool of its own`
	for _, n := range []*node{a, b} {
		waitEvent(t, s, n.name, want)
		assert.Equal(t, "1", metric(t, n, "multi_bridge_agent_networks"), n.name)
		assert.Equal(t, "", slicesFile(t, n, "net3"), n.name)
	}
	assert.Empty(t, leaseIDs(t, s, "net3"))
	assert.Equal(t, before, leaseIDs(t, s, "net1"))
	ok, detail := net1Routed(t, a, b)()
	assert.True(t, ok, detail)
}

// TestInvalidEditKeepsTheNetwork: an invalid edit of a live NAD ("table":
// 254) made every agent drop the network: its routes vanished cluster-wide
// and /readyz said "ok: 0 of 0 networks". The agents keep the NAD's last
// valid version while it is invalid, and say so.
func TestInvalidEditKeepsTheNetwork(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	_, a, b := twoNodes(t, s)
	before := leaseIDs(t, s, "net1")

	invalid := strings.Replace(nadConfig("net1", "10.240.16.0/20", 24), `"isGateway"`, `"table":254,"isGateway"`, 1)
	require.NoError(t, s.server.UpdateNADConfig(ctxT(t), "default", "net1", invalid))
	want := `Warning InvalidNetworkConfig: keeping the last valid definition of nad:default/net1 (network net1: pool 10.240.16.0/20 in /24 slices) ` +
		`while it is invalid: nad:default/net1: invalid "table" 254: 254 is the kernel's "main" table; ` +
		`use 1-252 or 256-2147483647, 0 for no policy routing, or omit it to choose automatically`
	for _, n := range []*node{a, b} {
		waitEvent(t, s, n.name, want)
		eventually(t, converge, "the problem counted", func() (bool, string) {
			v := metric(t, n, `multi_bridge_agent_problems{reason="InvalidNetworkConfig"}`)
			return v == "1", n.name + ": " + v
		})
		code, body, err := n.agent.Get("/readyz")
		require.NoError(t, err)
		assert.Equal(t, 200, code)
		assert.Equal(t, "ok: 1 of 1 networks leased, 1 routes\nproblem: InvalidNetworkConfig x1\n", body, n.name)
	}
	ok, detail := net1Routed(t, a, b)()
	assert.True(t, ok, "routes stay: %s", detail)
	assert.Equal(t, before, leaseIDs(t, s, "net1"))

	// Fixed: the problem goes away.
	require.NoError(t, s.server.UpdateNADConfig(ctxT(t), "default", "net1", nadConfig("net1", "10.240.16.0/20", 24)))
	for _, n := range []*node{a, b} {
		eventually(t, converge, "the problem gone", func() (bool, string) {
			_, body, err := n.agent.Get("/readyz")
			require.NoError(t, err)
			return body == "ok: 1 of 1 networks leased, 1 routes\n", n.name + ": " + body
		})
		assert.Equal(t, "", metric(t, n, `multi_bridge_agent_problems{reason="InvalidNetworkConfig"}`))
	}
	ok, detail = net1Routed(t, a, b)()
	assert.True(t, ok, detail)
	assert.Equal(t, before, leaseIDs(t, s, "net1"))

	// Deleting the NAD does take the network away (routes included): that
	// is what deleting a network means.
	require.NoError(t, s.server.DeleteNAD(ctxT(t), "default", "net1"))
	eventually(t, converge, "net1's routes gone", func() (bool, string) {
		ra, rb := agentRoutes(t, a), agentRoutes(t, b)
		return len(ra) == 0 && len(rb) == 0, fmt.Sprint(ra, rb)
	})
}

// TestForeignSubnetFileLeftAlone: a node that holds no slice removed its
// subnet file of the network even when the file was not a lease of that
// network. Only the agent's own file goes; another is reported.
func TestForeignSubnetFileLeftAlone(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "tiny", "10.240.16.0/29", 30)
	simulateNode(t, s, "node-b", "192.0.2.12", request("tiny", "10.240.16.0/29", 30))
	simulateNode(t, s, "node-c", "192.0.2.13", request("tiny", "10.240.16.0/29", 30))
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "")
	dir := filepath.Join(a.runtimeDir, "subnets")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	path := filepath.Join(dir, "tiny.json")
	foreign := `{"network":"other","node":"node-a","pool":"10.240.64.0/20","subnet":"10.240.64.0/24"}`
	require.NoError(t, os.WriteFile(path, []byte(foreign), 0o644))
	c.start(a)
	waitEvent(t, s, "node-a", `Warning InvalidSubnetFile: this node holds no slice of network tiny, and its node subnet file is not the agent's: `+
		`not removing it: node subnet file `+path+` holds a slice of network "other", not of "tiny"; remove the file by hand`)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, foreign, string(got))
	assert.Equal(t, "1", metric(t, a, `multi_bridge_agent_problems{reason="PoolExhausted"}`))
	assert.Equal(t, "1", metric(t, a, `multi_bridge_agent_problems{reason="InvalidSubnetFile"}`))
}

// TestNodePolicyBoundsNADPools: a NAD is written by namespace users, and
// the agent routes every node's slices of its pool; a pool outside the
// node policy's allowedSubnets (here the cluster's service range) gets no
// lease and no route on a node with that policy.
func TestNodePolicyBoundsNADPools(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	createNAD(t, s, "evil", "10.96.0.0/12", 24)
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "")
	policyFile := filepath.Join(t.TempDir(), "policy.json")
	require.NoError(t, os.WriteFile(policyFile, []byte(`{"allowedSubnets": ["10.240.0.0/16"]}`), 0o644))
	c.start(a, "--policy", policyFile)
	waitEvent(t, s, a.name, `Warning InvalidNetworkConfig: ignoring network "evil" of nad:default/evil on this node: "nodeSubnets.pool" 10.96.0.0/12 `+
		`is not allowed by rule "allowedSubnets" of `+policyFile+`, which allows [10.240.0.0/16]; use a value the node policy allows, or ask the cluster's administrator to extend the policy`)
	eventually(t, converge, "net1 leased", func() (bool, string) { return slicesFile(t, a, "net1") != "", "no slice file" })
	assert.Equal(t, "", slicesFile(t, a, "evil"))
	assert.Empty(t, leaseIDs(t, s, "evil"))
	assert.Equal(t, "1", metric(t, a, "multi_bridge_agent_networks"))
}

// TestNADPoolOverTheNodesLANRefused: a NAD whose pool overlaps the node's
// own LAN (here the 192.0.2.0/24 of its eth0) would have the agent route
// part of the LAN to other nodes. It is refused, even without a policy file.
func TestNADPoolOverTheNodesLANRefused(t *testing.T) {
	s := setup(t)
	createNAD(t, s, "net1", "10.240.16.0/20", 24)
	createNAD(t, s, "lan", "192.0.2.0/24", 26)
	c := newCluster(t, s)
	a := c.addNode("node-a", "192.0.2.11", "")
	c.start(a)
	waitEvent(t, s, a.name, `Warning InvalidNetworkConfig: ignoring network "lan" of nad:default/lan on this node: its pool 192.0.2.0/24 overlaps 192.0.2.0/24, `+
		`a subnet of this node's own; give the network a pool of its own, or list the pool in the node policy's allowedSubnets`)
	eventually(t, converge, "net1 leased", func() (bool, string) { return slicesFile(t, a, "net1") != "", "no slice file" })
	assert.Equal(t, "", slicesFile(t, a, "lan"))
	assert.Empty(t, leaseIDs(t, s, "lan"))
}
