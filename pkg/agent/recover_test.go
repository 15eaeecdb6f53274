package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/lease"
	"github.com/multi-bridge-cni/multi-bridge/pkg/nodesubnet"
)

// leaseOf is a canonical lease, as an agent would have created it.
func leaseOf(network, node, pool, subnet string) lease.Lease {
	return lease.Lease{Network: network, Node: node, Pool: pfx(pool), Subnet: pfx(subnet), Name: lease.Name(network, pfx(subnet))}
}

func sliceFile(network, node, pool, subnet string) *nodesubnet.Lease {
	return &nodesubnet.Lease{Network: network, Node: node, Pool: pfx(pool), Subnet: pfx(subnet)}
}

func TestRecover(t *testing.T) {
	const (
		poolA = "fd00:10:240:1000::/56"
		poolB = "fd00:10:240:2000::/56"
	)
	a0 := leaseOf("net6", "node-a", poolA, "fd00:10:240:1000::/64")
	b1 := leaseOf("net6", "node-b", poolA, "fd00:10:240:1001::/64")
	c2 := leaseOf("net6", "node-c", poolB, "fd00:10:240:2000::/64")
	leased := func(pool string, size int) Network { return Network{Name: "net6", Pool: pfx(pool), Size: size} }
	for _, tc := range []struct {
		name   string
		leases []lease.Lease
		file   *nodesubnet.Lease
		pods   []string
		want   Network
		by     string // "": not recovered
	}{
		{
			name:   "the verifier's restart: this node's lease",
			leases: []lease.Lease{b1, a0},
			file:   sliceFile("net6", "node-a", poolA, "fd00:10:240:1000::/64"),
			want:   leased(poolA, 64),
			by:     "this node's SubnetLease net6.fd00-10-240-1000---64 records it",
		},
		{
			name:   "this node's lease wins over the other leases' pool: the node never releases it",
			leases: []lease.Lease{leaseOf("net6", "node-a", poolB, "fd00:10:240:2001::/64"), b1, c2, leaseOf("net6", "node-d", poolA, "fd00:10:240:1002::/64")},
			want:   leased(poolB, 64),
			by:     "this node's SubnetLease net6.fd00-10-240-2001---64 records it",
		},
		{
			name:   "two leases of this node: the lowest, which Acquire keeps",
			leases: []lease.Lease{leaseOf("net6", "node-a", poolB, "fd00:10:240:2001::/64"), leaseOf("net6", "node-a", poolA, "fd00:10:240:1003::/64")},
			want:   leased(poolA, 64),
			by:     "this node's SubnetLease net6.fd00-10-240-1003---64 records it",
		},
		{
			name:   "no lease of this node: its subnet file, as a lease has it",
			leases: []lease.Lease{b1, c2, leaseOf("net6", "node-d", poolA, "fd00:10:240:1002::/64")},
			file:   sliceFile("net6", "node-a", poolB, "fd00:10:240:2005::/64"),
			want:   leased(poolB, 64),
			by:     "this node's node subnet file and 1 of its 3 SubnetLeases record it",
		},
		{
			name:   "a subnet file no lease agrees with: the leases' majority",
			leases: []lease.Lease{b1, c2, leaseOf("net6", "node-d", poolA, "fd00:10:240:1002::/64")},
			file:   sliceFile("net6", "node-a", "fd00:10:240:3000::/56", "fd00:10:240:3000::/64"),
			want:   leased(poolA, 64),
			by:     "2 of its 3 SubnetLeases record it",
		},
		{
			name:   "a tie: the lowest pool",
			leases: []lease.Lease{c2, b1},
			want:   leased(poolA, 64),
			by:     "1 of its 2 SubnetLeases record it",
		},
		{
			name:   "leases of other networks, made by hand or nonsensical are no evidence",
			leases: []lease.Lease{leaseOf("net1", "node-b", "10.240.16.0/20", "10.240.16.0/24"), {Network: "net6", Node: "node-b", Pool: pfx(poolA), Subnet: pfx("fd00:10:240:1000::/64"), Name: "by-hand"}, leaseOf("net6", "node-c", "10.240.16.0/20", "fd00:10:240:1000::/64")},
		},
		{
			name: "the management network: this node's subnet file is its podCIDR",
			file: sliceFile("net6", "node-a", "fd00:10:240::/52", "fd00:10:240:1::/64"),
			pods: []string{"10.240.1.0/24", "fd00:10:240:1::/64"},
			want: Network{Name: "net6", Pool: pfx("fd00:10:240::/52"), FromNodePodCIDR: true},
			by:   "this node's node subnet file and podCIDR record it",
		},
		{
			name: "a subnet file that is not the podCIDR, and no lease: the network's slices are free, as good as deleted",
			file: sliceFile("net6", "node-a", "fd00:10:240::/52", "fd00:10:240:2::/64"),
			pods: []string{"fd00:10:240:1::/64"},
		},
		{
			name: "another node's subnet file is no evidence",
			file: sliceFile("net6", "node-z", "fd00:10:240::/52", "fd00:10:240:1::/64"),
			pods: []string{"fd00:10:240:1::/64"},
		},
		{
			name: "nothing at all",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Recover("net6", tc.file, State{Node: "node-a", Leases: tc.leases, PodCIDRs: tc.pods})
			if tc.by == "" {
				assert.False(t, ok)
				assert.Equal(t, Recovered{}, got)
				return
			}
			assert.True(t, ok)
			assert.Equal(t, Recovered{Network: tc.want, RecordedBy: tc.by}, got)
		})
	}

	// Slices of two sizes in one pool, as many leases each: the shortest
	// prefixes (the larger slices).
	got, ok := Recover("net1", nil, State{Node: "node-a", Leases: []lease.Lease{
		leaseOf("net1", "node-b", "10.240.16.0/20", "10.240.17.0/25"), leaseOf("net1", "node-c", "10.240.16.0/20", "10.240.16.0/24"),
	}})
	assert.True(t, ok)
	assert.Equal(t, Recovered{Network: Network{Name: "net1", Pool: pfx("10.240.16.0/20"), Size: 24}, RecordedBy: "1 of its 2 SubnetLeases record it"}, got)
}

func TestNamedNetwork(t *testing.T) {
	for _, tc := range []struct {
		raw, fallback, want string
	}{
		{`{not json`, "net6", "net6"},
		{`{not json`, "", ""},
		{``, "net6", "net6"},
		{`{"cniVersion":"1.1.0","name":"net6","type":"multi-bridge","table":254}`, "v6", "net6"},
		{`{"cniVersion":"1.1.0","name":"net6","type":"multi-bri`, "", "net6"},
		{`{"cniVersion":"1.1.0","ipam":{"name":"inner"},"name":"net6",`, "", "net6"},
		{`{"name":"first","name":"net6"}`, "", "net6"},
		{`{"cniVersion":"1.1.0","type":"multi-bridge","nodeSubnets":{}}`, "net6", "net6"},
		{`{"cniVersion":"1.1.0","plugins":[{"name":"inner"}],"name":"net2"}`, "", "net2"},
		{`{"name":42}`, "net6", "net6"},
		{`["net6"]`, "", ""},
		{`{"name":"../../escape"}`, "", ""},
		{`{"name":"../../escape"}`, "escape", ""},
	} {
		assert.Equal(t, tc.want, NamedNetwork([]byte(tc.raw), tc.fallback), "%s (fallback %q)", tc.raw, tc.fallback)
	}
}

// TestGatherRecovers: an agent started while a network's only definitions
// were invalid knew no valid version of them and dropped the network (its
// routes went, /readyz said "0 of 0 networks"), or let a newer NAD of
// another pool take it over (it released its lease and leased a slice of
// that pool). The state that outlives the agent stands in for the invalid
// definition, at its place in the order.
func TestGatherRecovers(t *testing.T) {
	const (
		poolA = "fd00:10:240:1000::/56"
		poolB = "fd00:10:240:2000::/56"
	)
	const notJSON = `nad:default/net6: CNI configuration is not a JSON object: invalid character 'n' looking for beginning of object key string`
	broken := nadObject("default", "net6", "uid-1", t1, "{not json")
	newer := nadObject("other", "net6", "uid-2", t2, strings.Replace(nadConf("net6", poolB), `"size":24`, `"size":64`, 1))
	older := nadObject("kube-system", "net6", "uid-3", t0, strings.Replace(nadConf("net6", poolB), `"size":24`, `"size":64`, 1))
	leases := []lease.Lease{leaseOf("net6", "node-a", poolA, "fd00:10:240:1000::/64"), leaseOf("net6", "node-b", poolA, "fd00:10:240:1001::/64")}
	st := State{Node: "node-a", Leases: leases}
	recovered := Network{Name: "net6", Pool: pfx(poolA), Size: 64, Source: "nad:default/net6", Created: t1}
	keeping := Refusal{Reason: ReasonBadNetwork, Key: "nad:default/net6", Message: "keeping network net6 (pool " + poolA + " in /64 slices, " +
		"as this node's SubnetLease net6.fd00-10-240-1000---64 records it) while nad:default/net6, which names it, " +
		"is invalid and no valid version of it is known to this agent: " + notJSON}
	ignoring := Refusal{Reason: ReasonBadNetwork, Key: "nad:default/net6", Message: "ignoring an invalid network definition: " + notJSON}
	conflict := Refusal{Reason: ReasonNetworkConflict, Key: "nad:other/net6#net6", Message: `ignoring nad:other/net6: it defines network "net6" as pool ` + poolB +
		` in /64 slices, but the established definition nad:default/net6 as pool ` + poolA + ` in /64 slices; make it slice alike, rename its network or delete it`}
	for _, tc := range []struct {
		name    string
		nads    []*unstructured.Unstructured
		st      State
		want    []Network
		refused []Refusal
	}{
		{
			name:    "the verifier's restart while the NAD is invalid: its leases define the network",
			nads:    []*unstructured.Unstructured{broken},
			st:      st,
			want:    []Network{recovered},
			refused: []Refusal{keeping},
		},
		{
			name:    "the verifier's take-over: the recovered definition keeps default/net6's place, the newer NAD stays ignored",
			nads:    []*unstructured.Unstructured{newer, broken},
			st:      st,
			want:    []Network{recovered},
			refused: []Refusal{keeping, conflict},
		},
		{
			name:    "an older valid definition comes first anyway: nothing to recover",
			nads:    []*unstructured.Unstructured{broken, older},
			st:      st,
			want:    []Network{{Name: "net6", Pool: pfx(poolB), Size: 64, Source: "nad:kube-system/net6", Created: t0}},
			refused: []Refusal{ignoring},
		},
		{
			name:    "no lease and no subnet file: nothing records the network",
			nads:    []*unstructured.Unstructured{broken},
			st:      State{Node: "node-a"},
			refused: []Refusal{ignoring},
		},
		{
			name:    "nothing records it, and a newer NAD defines it: that one is the network now",
			nads:    []*unstructured.Unstructured{broken, newer},
			st:      State{Node: "node-a"},
			want:    []Network{{Name: "net6", Pool: pfx(poolB), Size: 64, Source: "nad:other/net6", Created: t2}},
			refused: []Refusal{ignoring},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var defs []Definition
			for _, u := range tc.nads {
				defs = append(defs, nadDefinition(u))
			}
			got, refused := gather(defs, history{}, tc.st)
			want := map[string]Network{}
			for _, n := range tc.want {
				want[n.Name] = n
			}
			assert.Equal(t, want, got)
			assert.Equal(t, tc.refused, refused)
		})
	}
}

// TestGatherRemembersBeforeRecovering: what the agent saw comes first. A
// NAD it saw valid without a sliced network is not brought back by the
// leases of the network it names; once the NAD is deleted and created
// again (another object), the leases count.
func TestGatherRemembersBeforeRecovering(t *testing.T) {
	const pool = "10.240.16.0/20"
	st := State{Node: "node-a", Leases: []lease.Lease{leaseOf("net1", "node-a", pool, "10.240.16.0/24")}}
	fixed := nadObject("default", "net1", "uid-1", t1, `{"cniVersion":"1.1.0","name":"net1","type":"multi-bridge","bridge":"br-net1","ipam":{"type":"host-local","subnet":"10.240.10.0/24"}}`)
	const tableErr = `nad:default/net1: invalid "table" 254: 254 is the kernel's "main" table; ` +
		`use 1-252 or 256-2147483647, 0 for no policy routing, or omit it to choose automatically`
	broken := nadObject("default", "net1", "uid-1", t1, strings.Replace(nadConf("net1", pool), `"type"`, `"table":254,"type"`, 1))
	recreated := nadObject("default", "net1", "uid-2", t2, broken.Object["spec"].(map[string]any)["config"].(string))
	h := history{}
	for _, step := range []struct {
		name    string
		nad     *unstructured.Unstructured
		want    map[string]Network
		refused []Refusal
	}{
		{name: "valid, with a fixed subnet: no network to slice", nad: fixed, want: map[string]Network{}},
		{
			name: "invalid: the agent knows it sliced nothing",
			nad:  broken, want: map[string]Network{},
			refused: []Refusal{{Reason: ReasonBadNetwork, Key: "nad:default/net1", Message: "ignoring an invalid network definition: " + tableErr}},
		},
		{
			name: "deleted and created again, invalid: the leases define net1",
			nad:  recreated,
			want: map[string]Network{"net1": {Name: "net1", Pool: pfx(pool), Size: 24, Source: "nad:default/net1", Created: t2}},
			refused: []Refusal{{Reason: ReasonBadNetwork, Key: "nad:default/net1", Message: "keeping network net1 (pool " + pool + " in /24 slices, " +
				"as this node's SubnetLease net1.10-240-16-0-24 records it) while nad:default/net1, which names it, " +
				"is invalid and no valid version of it is known to this agent: " + tableErr}},
		},
	} {
		got, refused := gather([]Definition{nadDefinition(step.nad)}, h, st)
		assert.Equal(t, step.want, got, step.name)
		assert.Equal(t, step.refused, refused, step.name)
	}
}

// TestGatherFileRecovered: the management network is a file of the conf
// dir, sliced from Node podCIDRs. An invalid edit keeps its last valid
// version while the agent runs; an agent started while it is invalid
// recovers it from this node's subnet file and podCIDR.
func TestGatherFileRecovered(t *testing.T) {
	const source = "file:/etc/cni/net.d/00-mgmt.conf"
	mgmt := Network{Name: "mgmt", Pool: pfx("10.240.0.0/20"), FromNodePodCIDR: true, Source: source}
	cut := errors.New(source + ": CNI configuration is not a JSON object: unexpected end of JSON input")
	invalid := Definition{Source: source, Err: cut, Network: "mgmt"}
	st := State{Node: "node-a", PodCIDRs: []string{"10.240.1.0/24"}, SliceFile: func(network string) *nodesubnet.Lease {
		if network == "mgmt" {
			return sliceFile("mgmt", "node-a", "10.240.0.0/20", "10.240.1.0/24")
		}
		return nil
	}}

	h := history{}
	got, refused := gather([]Definition{{Source: source, Nets: []Network{mgmt}}}, h, st)
	assert.Equal(t, map[string]Network{"mgmt": mgmt}, got)
	assert.Empty(t, refused)
	got, refused = gather([]Definition{invalid}, h, st)
	assert.Equal(t, map[string]Network{"mgmt": mgmt}, got, "running: its last valid version")
	assert.Equal(t, []Refusal{{Reason: ReasonBadNetwork, Key: source, Message: "keeping the last valid definition of " + source +
		" (network mgmt: pool 10.240.0.0/20 from Node podCIDRs) while it is invalid: " + cut.Error()}}, refused)

	got, refused = gather([]Definition{invalid}, history{}, st)
	assert.Equal(t, map[string]Network{"mgmt": mgmt}, got, "started while it is invalid: recovered")
	assert.Equal(t, []Refusal{{Reason: ReasonBadNetwork, Key: source, Message: "keeping network mgmt (pool 10.240.0.0/20 from Node podCIDRs, " +
		"as this node's node subnet file and podCIDR record it) while " + source + ", which names it, " +
		"is invalid and no valid version of it is known to this agent: " + cut.Error()}}, refused)

	got, refused = gather([]Definition{{Source: source, Err: cut}}, history{}, st)
	assert.Equal(t, map[string]Network{}, got, "a file whose network cannot be told")
	assert.Equal(t, []Refusal{{Reason: ReasonBadNetwork, Key: source, Message: "ignoring an invalid network definition: " + cut.Error()}}, refused)

	got, _ = gather(nil, h, st)
	assert.Equal(t, map[string]Network{}, got, "deleted: gone, and forgotten")
	assert.Empty(t, h)
}
