package rules

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
)

// PodRules is what Choose needs to know about a pod: its current rules and
// which interface holds each address (to say whose a conflicting rule is).
type PodRules struct {
	Rules  []netlink.Rule
	Owners map[netip.Addr]string // address -> interface name
}

// Choice is a table and a priority for one attachment.
type Choice struct {
	Table    int
	Priority int
}

// Choose picks the table and rule preference of an attachment named ifName,
// given what the pod already has. Rules whose source is one of ours (the
// addresses of this attachment on a repeated ADD) are ours to keep, which is
// what makes a re-ADD land on the same numbers. Automatic choices are the
// lowest free number from 100, so they are deterministic and never collide.
func Choose(req config.Routing, ifName string, ours []netip.Addr, pod PodRules) (Choice, error) {
	if req.Mode == config.RoutingMain {
		return Choice{Table: MainTable}, nil
	}
	var mine, others []netlink.Rule
	for _, r := range pod.Rules {
		if isBuiltin(r) {
			continue
		}
		if a, ok := hostSource(r); ok && slices.Contains(ours, a) {
			mine = append(mine, r)
		} else {
			others = append(others, r)
		}
	}

	var c Choice
	switch {
	case req.Mode == config.RoutingTable:
		c.Table = req.Table
		if r, ok := findRule(others, func(r netlink.Rule) bool { return r.Table == c.Table }); ok {
			return c, conflict("table", c.Table, ifName, r, pod.Owners)
		}
	case len(mine) > 0:
		c.Table = mine[0].Table
	default:
		c.Table = lowestFree(config.FirstAutoTable, config.MaxTable, func(t int) bool {
			_, used := findRule(others, func(r netlink.Rule) bool { return r.Table == t })
			return used
		})
	}

	switch {
	case req.Priority != 0:
		c.Priority = req.Priority
		if r, ok := findRule(others, func(r netlink.Rule) bool { return r.Priority == c.Priority }); ok {
			return c, conflict("priority", c.Priority, ifName, r, pod.Owners)
		}
	case len(mine) > 0:
		c.Priority = mine[0].Priority
	default:
		c.Priority = lowestFree(config.FirstAutoPriority, config.MaxPriority, func(p int) bool {
			_, used := findRule(others, func(r netlink.Rule) bool { return r.Priority == p })
			return used
		})
	}
	if c.Table == 0 || c.Priority == 0 {
		return c, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("no free routing table or rule preference left in the pod for %s", ifName),
			`give this network an explicit "table" and "priority"`)
	}
	return c, nil
}

// isBuiltin reports the kernel's own rules (local, main, default), which
// never conflict with an attachment's.
func isBuiltin(r netlink.Rule) bool {
	return r.Priority == 0 || r.Priority == 32766 || r.Priority == 32767
}

// hostSource is the address of a "from <addr>/<full length>" rule.
func hostSource(r netlink.Rule) (netip.Addr, bool) {
	if r.Src == nil {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(r.Src.IP)
	ones, bits := r.Src.Mask.Size()
	if !ok || ones != bits {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func findRule(rules []netlink.Rule, match func(netlink.Rule) bool) (netlink.Rule, bool) {
	for _, r := range rules {
		if match(r) {
			return r, true
		}
	}
	return netlink.Rule{}, false
}

func lowestFree(from, to int, used func(int) bool) int {
	for n := from; n <= to; n++ {
		if n == 253 || n == 254 || n == 255 {
			continue
		}
		if !used(n) {
			return n
		}
	}
	return 0
}

func conflict(field string, value int, ifName string, r netlink.Rule, owners map[netip.Addr]string) error {
	owner := "another source"
	if a, ok := hostSource(r); ok {
		if name, ok := owners[a]; ok {
			owner = "interface " + name
		}
	}
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("%s %d asked for by %s is already used in the pod by rule %q of %s",
			field, value, ifName, FormatRule(r), owner),
		fmt.Sprintf("give each network of a pod its own %q, or omit it to choose a free one automatically", field))
}
