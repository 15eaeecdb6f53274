package routes

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Kernel is a route of the main table as the kernel reports it.
type Kernel struct {
	Dst       netip.Prefix
	Gw        netip.Addr
	LinkIndex int
	Protocol  int
	Priority  int
	// Multipath routes are never the agent's: always replaced.
	Multipath bool
}

func (k Kernel) String() string {
	return fmt.Sprintf("%s via %s dev #%d proto %d metric %d", k.Dst, k.Gw, k.LinkIndex, k.Protocol, k.Priority)
}

// protoKernel is RTPROT_KERNEL: routes the kernel made for addresses.
const protoKernel = 2

// ip6RoutePrioUser is IP6_RT_PRIO_USER: the metric the kernel gives an IPv6
// route added with metric 0.
const ip6RoutePrioUser = 1024

// Metric is the metric the kernel reports for a route to dst that the agent
// added (the agent sets none): 0 for IPv4, 1024 for IPv6. A route of the
// agent's protocol with any other metric was not added by the agent.
func Metric(dst netip.Prefix) int {
	if dst.Addr().Is4() {
		return 0
	}
	return ip6RoutePrioUser
}

// Plan is what it takes to make the kernel hold exactly the desired routes.
type Plan struct {
	// Replace are desired routes missing or wrong in the kernel (replaced by
	// destination and Metric, taking over a foreign route of the same key).
	Replace []Route
	// Delete are the agent's routes that are no longer desired, or
	// duplicates of a desired one with another metric.
	Delete []Kernel
	// Blocked are desired routes not installed because the kernel has a
	// connected route for the same destination (the slice is on this node:
	// a configuration error; replacing would cut the node off its own link).
	Blocked []Route
	// InPlace counts desired routes already right.
	InPlace int
}

// Empty reports whether the plan changes nothing.
func (p Plan) Empty() bool { return len(p.Replace) == 0 && len(p.Delete) == 0 }

// Diff compares desired routes with the main table. Only routes with
// Protocol are the agent's: it deletes those that are not desired and never
// deletes anything else.
func Diff(desired []Route, kernel []Kernel) Plan {
	var p Plan
	want := make(map[netip.Prefix]Route, len(desired))
	for _, d := range desired {
		want[d.Dst] = d
	}
	ours := map[netip.Prefix]Kernel{}
	connected := map[netip.Prefix]bool{}
	for _, k := range kernel {
		switch {
		case k.Protocol == Protocol && k.Priority == Metric(k.Dst):
			ours[k.Dst] = k
		case k.Protocol == Protocol:
			p.Delete = append(p.Delete, k) // ours with a metric we never set
		case k.Protocol == protoKernel:
			// Any metric: IPv6 connected routes have 256, and an address
			// may carry a metric of its own.
			connected[k.Dst] = true
		}
	}
	for _, d := range desired {
		k, ok := ours[d.Dst]
		switch {
		case ok && !k.Multipath && k.Gw == d.Gw && k.LinkIndex == d.LinkIndex:
			p.InPlace++
		case connected[d.Dst]:
			p.Blocked = append(p.Blocked, d)
		default:
			p.Replace = append(p.Replace, d)
		}
	}
	for dst, k := range ours {
		if _, ok := want[dst]; !ok {
			p.Delete = append(p.Delete, k)
		}
	}
	slices.SortFunc(p.Delete, func(a, b Kernel) int {
		return cmp.Or(a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()), cmp.Compare(a.Priority, b.Priority))
	})
	return p
}
