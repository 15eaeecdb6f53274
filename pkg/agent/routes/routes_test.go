package routes

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

var (
	p = netip.MustParsePrefix
	a = netip.MustParseAddr
)

// underlay is node-a's attachment: eth0 (#2) on 192.0.2.0/24, a bridge of
// its own (#5) holding its net1 slice's gateway.
var underlay = []Connected{
	{Prefix: p("192.0.2.11/24"), LinkIndex: 2},
	{Prefix: p("2001:db8:2::11/64"), LinkIndex: 2},
	{Prefix: p("10.240.16.1/24"), LinkIndex: 5},
}

func TestDesired(t *testing.T) {
	peers := map[string]Peer{
		"node-a": {Name: "node-a", InternalIPs: []netip.Addr{a("192.0.2.11")}},
		"node-b": {Name: "node-b", InternalIPs: []netip.Addr{a("192.0.2.12"), a("2001:db8:2::12")}},
		"node-c": {Name: "node-c", InternalIPs: []netip.Addr{a("192.0.2.13")}},
		"far":    {Name: "far", InternalIPs: []netip.Addr{a("198.51.100.7")}},
	}
	for _, tc := range []struct {
		name     string
		slices   []Slice
		peers    map[string]Peer
		want     []Route
		problems []Problem
	}{
		{
			name: "other nodes' slices via their InternalIP, own slice skipped, sorted by destination",
			slices: []Slice{
				{"net2", "node-c", p("10.240.33.0/24")},
				{"net1", "node-a", p("10.240.16.0/24")},
				{"net1", "node-b", p("10.240.17.0/24")},
				{"net1", "node-c", p("10.240.18.0/24")},
				{"net2", "node-b", p("10.240.32.0/24")},
			},
			want: []Route{
				{Dst: p("10.240.17.0/24"), Gw: a("192.0.2.12"), LinkIndex: 2, Network: "net1", Node: "node-b"},
				{Dst: p("10.240.18.0/24"), Gw: a("192.0.2.13"), LinkIndex: 2, Network: "net1", Node: "node-c"},
				{Dst: p("10.240.32.0/24"), Gw: a("192.0.2.12"), LinkIndex: 2, Network: "net2", Node: "node-b"},
				{Dst: p("10.240.33.0/24"), Gw: a("192.0.2.13"), LinkIndex: 2, Network: "net2", Node: "node-c"},
			},
		},
		{
			name:   "deleted node: no route, no problem",
			slices: []Slice{{"net1", "gone", p("10.240.19.0/24")}},
		},
		{
			name:   "node on another L2 segment",
			slices: []Slice{{"net1", "far", p("10.240.20.0/24")}, {"net1", "node-b", p("10.240.17.0/24")}},
			want:   []Route{{Dst: p("10.240.17.0/24"), Gw: a("192.0.2.12"), LinkIndex: 2, Network: "net1", Node: "node-b"}},
			problems: []Problem{{Kind: NotOnLink, Slice: Slice{"net1", "far", p("10.240.20.0/24")},
				Detail: "node far's InternalIP 198.51.100.7 is on no subnet this node is attached to (another L2 segment?): " +
					"no route to its slice 10.240.20.0/24 of network net1; put the nodes on one L2 segment or route the pool by other means"}},
		},
		{
			name:   "IPv6 slice via the IPv6 InternalIP; none for a node without one",
			slices: []Slice{{"net6", "node-b", p("fd00:10:240:1::/64")}, {"net6", "node-c", p("fd00:10:240:2::/64")}},
			want:   []Route{{Dst: p("fd00:10:240:1::/64"), Gw: a("2001:db8:2::12"), LinkIndex: 2, Network: "net6", Node: "node-b"}},
			problems: []Problem{{Kind: NoInternalIP, Slice: Slice{"net6", "node-c", p("fd00:10:240:2::/64")},
				Detail: "node node-c has no IPv6 InternalIP in status.addresses: no route to its slice fd00:10:240:2::/64 of network net6"}},
		},
		{
			name:   "overlapping slices: the first by address, then node name, wins",
			slices: []Slice{{"mgmt", "node-c", p("10.240.1.0/24")}, {"mgmt", "node-b", p("10.240.1.0/24")}, {"other", "node-c", p("10.240.1.128/25")}},
			want:   []Route{{Dst: p("10.240.1.0/24"), Gw: a("192.0.2.12"), LinkIndex: 2, Network: "mgmt", Node: "node-b"}},
			problems: []Problem{
				{Kind: Overlap, Slice: Slice{"mgmt", "node-c", p("10.240.1.0/24")},
					Detail: "slice 10.240.1.0/24 of network mgmt on node node-c overlaps 10.240.1.0/24 of network mgmt on node node-b; only the latter is routed"},
				{Kind: Overlap, Slice: Slice{"other", "node-c", p("10.240.1.128/25")},
					Detail: "slice 10.240.1.128/25 of network other on node node-c overlaps 10.240.1.0/24 of network mgmt on node node-b; only the latter is routed"},
			},
		},
		{
			name:   "a peer claiming this node's own address is no gateway",
			slices: []Slice{{"net1", "clone", p("10.240.21.0/24")}},
			peers:  map[string]Peer{"clone": {Name: "clone", InternalIPs: []netip.Addr{a("192.0.2.11")}}},
			problems: []Problem{{Kind: NotOnLink, Slice: Slice{"net1", "clone", p("10.240.21.0/24")},
				Detail: "node clone's InternalIP 192.0.2.11 is on no subnet this node is attached to (another L2 segment?): " +
					"no route to its slice 10.240.21.0/24 of network net1; put the nodes on one L2 segment or route the pool by other means"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := peers
			if tc.peers != nil {
				ps = tc.peers
			}
			got, problems := Desired("node-a", tc.slices, ps, underlay)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.problems, problems)
		})
	}
}

func TestOnLink(t *testing.T) {
	connected := []Connected{
		{Prefix: p("192.0.2.11/24"), LinkIndex: 2},
		{Prefix: p("192.0.2.129/25"), LinkIndex: 3},
		{Prefix: p("203.0.113.5/32"), LinkIndex: 4},
	}
	for _, tc := range []struct {
		gw   string
		link int
		ok   bool
	}{
		{"192.0.2.12", 2, true},
		{"192.0.2.200", 3, true}, // the most specific subnet wins
		{"203.0.113.6", 0, false},
		{"203.0.113.5", 0, false}, // our own address
		{"198.51.100.1", 0, false},
		{"2001:db8::1", 0, false},
	} {
		link, ok := OnLink(a(tc.gw), connected)
		assert.Equal(t, tc.ok, ok, tc.gw)
		assert.Equal(t, tc.link, link, tc.gw)
	}
}

func TestDiff(t *testing.T) {
	b := Route{Dst: p("10.240.17.0/24"), Gw: a("192.0.2.12"), LinkIndex: 2, Network: "net1", Node: "node-b"}
	c := Route{Dst: p("10.240.18.0/24"), Gw: a("192.0.2.13"), LinkIndex: 2, Network: "net1", Node: "node-c"}
	d := Route{Dst: p("10.240.19.0/24"), Gw: a("192.0.2.14"), LinkIndex: 2, Network: "net1", Node: "node-d"}
	ours := func(r Route) Kernel {
		return Kernel{Dst: r.Dst, Gw: r.Gw, LinkIndex: r.LinkIndex, Protocol: Protocol}
	}
	wrongGw := ours(c)
	wrongGw.Gw = a("192.0.2.99")
	stale := Kernel{Dst: p("10.240.20.0/24"), Gw: a("192.0.2.15"), LinkIndex: 2, Protocol: Protocol}
	otherMetric := ours(b)
	otherMetric.Priority = 10
	foreign := Kernel{Dst: d.Dst, Gw: a("192.0.2.50"), LinkIndex: 2, Protocol: 4 /* static */}
	unrelated := Kernel{Dst: p("0.0.0.0/0"), Gw: a("192.0.2.1"), LinkIndex: 2, Protocol: 3 /* boot */}
	connected := Kernel{Dst: p("10.240.21.0/24"), LinkIndex: 7, Protocol: protoKernel}
	e := Route{Dst: p("10.240.21.0/24"), Gw: a("192.0.2.16"), LinkIndex: 2, Network: "net1", Node: "node-e"}
	multipath := ours(e)
	multipath.Dst = p("10.240.22.0/24")
	f := Route{Dst: p("10.240.22.0/24"), Gw: a("192.0.2.17"), LinkIndex: 2}
	multipath.Gw, multipath.Multipath = f.Gw, true

	plan := Diff([]Route{b, c, d, e, f}, []Kernel{ours(b), wrongGw, stale, otherMetric, foreign, unrelated, connected, multipath})
	assert.Equal(t, Plan{
		Replace: []Route{c, d, f}, // wrong gateway, foreign route taken over, multipath replaced
		Delete:  []Kernel{otherMetric, stale},
		Blocked: []Route{e},
		InPlace: 1,
	}, plan)
	assert.False(t, plan.Empty())

	converged := Diff([]Route{b, c}, []Kernel{ours(b), ours(c), unrelated})
	assert.True(t, converged.Empty())
	assert.Equal(t, 2, converged.InPlace)

	// Nothing desired: only our own routes go, never anyone else's.
	assert.Equal(t, Plan{Delete: []Kernel{ours(b), stale}}, Diff(nil, []Kernel{ours(b), stale, foreign, unrelated, connected}))
}

// IPv6: the kernel reports the agent's routes with metric 1024 and
// connected routes with 256 (the reviewer's endless delete/re-add loop).
func TestDiffIPv6Metrics(t *testing.T) {
	b := Route{Dst: p("fd00:10:240:1001::/64"), Gw: a("2001:db8::12"), LinkIndex: 2, Network: "net6", Node: "node-b"}
	c := Route{Dst: p("fd00:10:240:1002::/64"), Gw: a("2001:db8::13"), LinkIndex: 2, Network: "net6", Node: "node-c"}
	d := Route{Dst: p("fd00:10:240:1003::/64"), Gw: a("2001:db8::14"), LinkIndex: 2, Network: "net6", Node: "node-d"}
	asAdded := Kernel{Dst: b.Dst, Gw: b.Gw, LinkIndex: 2, Protocol: Protocol, Priority: 1024}
	otherMetric := Kernel{Dst: c.Dst, Gw: c.Gw, LinkIndex: 2, Protocol: Protocol, Priority: 100} // not the agent's metric: added by hand
	connected := Kernel{Dst: d.Dst, LinkIndex: 7, Protocol: protoKernel, Priority: 256}
	stale := Kernel{Dst: p("fd00:10:240:1009::/64"), Gw: a("2001:db8::19"), LinkIndex: 2, Protocol: Protocol, Priority: 1024}

	assert.Equal(t, Plan{
		Replace: []Route{c},
		Delete:  []Kernel{otherMetric, stale},
		Blocked: []Route{d},
		InPlace: 1,
	}, Diff([]Route{b, c, d}, []Kernel{asAdded, otherMetric, connected, stale}))
	assert.Equal(t, 0, Metric(p("10.240.16.0/24")))
	assert.Equal(t, 1024, Metric(p("fd00:10:240::/64")))
}
