// Package routes keeps the routes between nodes: for every other node and
// network, "<its slice> via <its InternalIP>" in this node's main table, as
// flannel's host-gw backend does. Desired computes them (pure); Plan diffs
// them against the kernel (pure); Reconciler applies the plan through
// netlink, touching only routes tagged with Protocol.
package routes

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Protocol tags every route the agent installs ("proto 201" in `ip route`),
// so it only ever changes or deletes its own routes. 201 is in the range
// left to local use by iproute2 (rt_protos: 0-4 kernel, 8-254 daemons; bird
// is 12, zebra 11, kube-router/calico use 186/80).
const Protocol = 201

// ProtocolName is how docs and demos name Protocol (rt_protos.d entry).
const ProtocolName = "multi-bridge"

// Slice is one node's slice of one network.
type Slice struct {
	Network string
	Node    string
	Subnet  netip.Prefix
}

// Peer is another node as the agent sees it.
type Peer struct {
	Name string
	// InternalIPs are the Node's status.addresses of type InternalIP.
	InternalIPs []netip.Addr
}

// Connected is a subnet this node is attached to: an address of the node
// with its prefix, on the link with LinkIndex.
type Connected struct {
	Prefix    netip.Prefix
	LinkIndex int
}

// Route is one desired route: Dst via Gw on LinkIndex.
type Route struct {
	Dst       netip.Prefix
	Gw        netip.Addr
	LinkIndex int
	// Network and Node say why the route exists (logs, events).
	Network string
	Node    string
}

func (r Route) String() string {
	return fmt.Sprintf("%s via %s (network %s, node %s)", r.Dst, r.Gw, r.Network, r.Node)
}

// ProblemKind names why a slice gets no route.
type ProblemKind string

// Problems, used as Kubernetes Event reasons.
const (
	// NotOnLink: the peer's InternalIP is on no subnet this node is
	// attached to (another L2 segment); a route via it would not work.
	NotOnLink ProblemKind = "NotOnLink"
	// NoInternalIP: the peer has no InternalIP of the slice's family.
	NoInternalIP ProblemKind = "NoInternalIP"
	// Overlap: two nodes claim overlapping slices (podCIDRs set twice, or
	// pools of two networks overlapping); only the first gets a route.
	Overlap ProblemKind = "SubnetOverlap"
)

// Problem is a slice that gets no route, and why.
type Problem struct {
	Kind   ProblemKind
	Slice  Slice
	Detail string
}

// Desired computes the routes to the other nodes' slices. Slices of self
// and of nodes missing from peers (a deleted node whose lease is about to be
// released) get none. The result is sorted by destination and independent of
// the input order.
func Desired(self string, slices_ []Slice, peers map[string]Peer, connected []Connected) ([]Route, []Problem) {
	ss := slices.Clone(slices_)
	slices.SortFunc(ss, func(a, b Slice) int {
		return cmp.Or(a.Subnet.Addr().Compare(b.Subnet.Addr()), cmp.Compare(a.Subnet.Bits(), b.Subnet.Bits()),
			cmp.Compare(a.Node, b.Node), cmp.Compare(a.Network, b.Network))
	})
	var routes []Route
	var problems []Problem
	var taken []Slice
	for _, s := range ss {
		if s.Node == self || !s.Subnet.IsValid() {
			continue
		}
		peer, ok := peers[s.Node]
		if !ok {
			continue
		}
		s.Subnet = s.Subnet.Masked()
		if i := slices.IndexFunc(taken, func(t Slice) bool { return t.Subnet.Overlaps(s.Subnet) }); i >= 0 {
			problems = append(problems, Problem{Kind: Overlap, Slice: s,
				Detail: fmt.Sprintf("slice %s of network %s on node %s overlaps %s of network %s on node %s; only the latter is routed",
					s.Subnet, s.Network, s.Node, taken[i].Subnet, taken[i].Network, taken[i].Node)})
			continue
		}
		gw, ok := addrOfFamily(peer.InternalIPs, s.Subnet.Addr().Is4())
		if !ok {
			problems = append(problems, Problem{Kind: NoInternalIP, Slice: s,
				Detail: fmt.Sprintf("node %s has no %s InternalIP in status.addresses: no route to its slice %s of network %s",
					s.Node, family(s.Subnet.Addr()), s.Subnet, s.Network)})
			continue
		}
		link, ok := OnLink(gw, connected)
		if !ok {
			problems = append(problems, Problem{Kind: NotOnLink, Slice: s,
				Detail: fmt.Sprintf("node %s's InternalIP %s is on no subnet this node is attached to (another L2 segment?): "+
					"no route to its slice %s of network %s; put the nodes on one L2 segment or route the pool by other means",
					s.Node, gw, s.Subnet, s.Network)})
			continue
		}
		taken = append(taken, s)
		routes = append(routes, Route{Dst: s.Subnet, Gw: gw, LinkIndex: link, Network: s.Network, Node: s.Node})
	}
	return routes, problems
}

func addrOfFamily(addrs []netip.Addr, is4 bool) (netip.Addr, bool) {
	for _, a := range addrs {
		a = a.Unmap()
		if a.IsValid() && a.Is4() == is4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// OnLink returns the link of the most specific connected subnet that holds
// gw: the interface a route via gw leaves through. Host prefixes (/32, /128)
// connect nothing, and gw being this node's own address means it is no
// gateway at all.
func OnLink(gw netip.Addr, connected []Connected) (int, bool) {
	best, bestBits := 0, -1
	for _, c := range connected {
		p := c.Prefix
		if p.Addr() == gw {
			return 0, false
		}
		if p.IsSingleIP() || !p.Masked().Contains(gw) {
			continue
		}
		if p.Bits() > bestBits {
			best, bestBits = c.LinkIndex, p.Bits()
		}
	}
	return best, bestBits >= 0
}
