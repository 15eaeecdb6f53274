package e2e

// Network definitions the agent must not use as they are: invalid ones,
// conflicting ones, and ones whose name is a path.

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
