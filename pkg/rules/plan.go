// Package rules is the pod side of multi-bridge: the routes and source rules
// that make a multi-homed pod answer out of the interface traffic came in on.
//
// Plan is a pure function from an attachment to the routes and rules it
// needs; Apply moves the kernel toward a plan (idempotently), Verify diffs a
// plan against the kernel (CHECK) and Remove takes a plan away (DEL). Because
// the decisions live in Plan, every policy-routing case is a table-driven
// test without root.
package rules

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// MainTable is the kernel's main routing table.
const MainTable = unix.RT_TABLE_MAIN

// Address is one address of an attachment with the gateway IPAM gave for it.
type Address struct {
	Prefix  netip.Prefix // the address with its subnet length, e.g. 10.240.10.2/24
	Gateway netip.Addr   // zero when IPAM gave none
}

// Attachment is everything Plan needs to know about one pod interface.
type Attachment struct {
	IfName    string
	LinkIndex int // every route names its interface: same-subnet networks must never share a route
	Addresses []Address
	// Routes are the IPAM routes plus, for isDefaultGateway, the default route.
	Routes []*types.Route
	// Table is the attachment's own table; MainTable (or 0) means no policy
	// routing: routes go to main and no rule is added.
	Table    int
	Priority int
	// DefaultInMain keeps the default route in main as well (isDefaultGateway).
	DefaultInMain bool
}

// Plan is the desired routing state of one attachment in the pod.
type Plan struct {
	Routes []netlink.Route
	Rules  []netlink.Rule
}

// PolicyRouted says whether the attachment has a table of its own.
func (a Attachment) PolicyRouted() bool {
	return a.Table != 0 && a.Table != MainTable
}

// BuildPlan computes the routes and rules of an attachment.
//
// With a table of its own, the table holds the connected route of every
// address, the default route and every IPAM route; main keeps only the
// kernel's connected route (and the default route when DefaultInMain); every
// address gets "from <addr>/<full length> lookup <table>". Without one, the
// routes go to main and there is no rule.
func BuildPlan(a Attachment) Plan {
	var p Plan
	table := MainTable
	if a.PolicyRouted() {
		table = a.Table
		for _, addr := range a.Addresses {
			p.Routes = append(p.Routes, connectedRoute(a.LinkIndex, table, addr.Prefix))
		}
	}
	for _, r := range a.Routes {
		route := ipamRoute(a, table, r)
		p.Routes = append(p.Routes, route)
		if a.PolicyRouted() && a.DefaultInMain && isDefault(r.Dst) {
			inMain := route
			inMain.Table = MainTable
			p.Routes = append(p.Routes, inMain)
		}
	}
	if a.PolicyRouted() {
		for _, addr := range a.Addresses {
			p.Rules = append(p.Rules, SourceRule(addr.Prefix.Addr(), a.Table, a.Priority))
		}
	}
	return p
}

// SourceRule is "from <addr> lookup <table> pref <priority>". The mask is the
// full address length, never the subnet's: a /64 mask on an IPv6 rule makes it
// match every source of the subnet, and with an all-zero mask every packet.
func SourceRule(addr netip.Addr, table, priority int) netlink.Rule {
	r := netlink.NewRule()
	r.Src = hostNet(addr)
	r.Table = table
	r.Priority = priority
	r.Family = family(addr)
	return *r
}

func connectedRoute(link, table int, p netip.Prefix) netlink.Route {
	return netlink.Route{
		LinkIndex: link,
		Dst:       ipNet(p.Masked()),
		Src:       net.IP(p.Addr().AsSlice()),
		Scope:     netlink.SCOPE_LINK,
		Table:     table,
		Family:    family(p.Addr()),
	}
}

func ipamRoute(a Attachment, table int, r *types.Route) netlink.Route {
	dst, _ := netip.ParsePrefix(r.Dst.String())
	dst = dst.Masked()
	route := netlink.Route{
		LinkIndex: a.LinkIndex,
		Dst:       ipNet(dst),
		Table:     table,
		MTU:       r.MTU,
		AdvMSS:    r.AdvMSS,
		Priority:  r.Priority,
		Family:    family(dst.Addr()),
	}
	if r.Table != nil && !a.PolicyRouted() {
		// CNI 1.1 lets IPAM name a table; only honoured when the attachment
		// has no table of its own, whose routes must all live together.
		route.Table = *r.Table
	}
	if r.Scope != nil {
		route.Scope = netlink.Scope(*r.Scope)
	}
	gw := r.GW
	if gw == nil {
		// As in the reference plugins: a route without a gateway goes through
		// the gateway of its family, or is on-link when there is none.
		if g := gatewayFor(a, dst.Addr().Is4()); g.IsValid() {
			gw = net.IP(g.AsSlice())
		}
	}
	if gw != nil {
		route.Gw = gw
	} else if r.Scope == nil {
		route.Scope = netlink.SCOPE_LINK
	}
	return route
}

func gatewayFor(a Attachment, v4 bool) netip.Addr {
	for _, addr := range a.Addresses {
		if addr.Gateway.IsValid() && addr.Gateway.Is4() == v4 {
			return addr.Gateway
		}
	}
	return netip.Addr{}
}

func isDefault(n net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

func hostNet(a netip.Addr) *net.IPNet {
	return ipNet(netip.PrefixFrom(a, a.BitLen()))
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// FormatRule renders a rule the way `ip rule` prints it, for messages a user
// can compare with their shell: "101: from 10.240.10.2 lookup 1".
func FormatRule(r netlink.Rule) string {
	from := "all"
	if r.Src != nil {
		if ones, bits := r.Src.Mask.Size(); ones == bits {
			from = r.Src.IP.String()
		} else if ones != 0 {
			from = r.Src.String()
		}
	}
	return fmt.Sprintf("%d: from %s lookup %s", r.Priority, from, tableName(r.Table))
}

// FormatRoute renders a route close to `ip route show table N`, with its
// interface as "#<index>".
func FormatRoute(r netlink.Route) string {
	return formatRoute(r, fmt.Sprintf("#%d", r.LinkIndex))
}

func formatRoute(r netlink.Route, dev string) string {
	dst := "default"
	if r.Dst != nil {
		if ones, _ := r.Dst.Mask.Size(); ones != 0 {
			dst = r.Dst.String()
		}
	}
	s := dst
	if r.Gw != nil {
		s += " via " + r.Gw.String()
	}
	s += " dev " + dev
	if r.Src != nil {
		s += " src " + r.Src.String()
	}
	return s + " table " + tableName(r.Table)
}

func tableName(t int) string {
	switch t {
	case MainTable:
		return "main"
	case unix.RT_TABLE_LOCAL:
		return "local"
	case unix.RT_TABLE_DEFAULT:
		return "default"
	}
	return fmt.Sprint(t)
}

// Tables lists the distinct tables a plan writes to, main excluded.
func (p Plan) Tables() []int {
	var ts []int
	for _, r := range p.Routes {
		if r.Table != MainTable && !slices.Contains(ts, r.Table) {
			ts = append(ts, r.Table)
		}
	}
	return ts
}
