package rules

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink is the part of a netlink handle bound to the pod's namespace that
// this package uses.
type Netlink interface {
	RouteReplace(*netlink.Route) error
	RouteAdd(*netlink.Route) error
	RouteDel(*netlink.Route) error
	RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error)
	RuleAdd(*netlink.Rule) error
	RuleDel(*netlink.Rule) error
	RuleList(family int) ([]netlink.Rule, error)
	LinkByIndex(index int) (netlink.Link, error)
}

// describe renders a route for a message, naming its interface.
func describe(h Netlink, r netlink.Route) string {
	dev := fmt.Sprintf("#%d", r.LinkIndex)
	if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
		dev = l.Attrs().Name
	}
	return formatRoute(r, dev)
}

// MainRouteConflict is a route the main table already holds for another
// interface, which an attachment would have to replace.
type MainRouteConflict struct {
	Want, Existing netlink.Route
	// ExistingLink is the interface of the existing route.
	ExistingLink netlink.Link
	description  string
}

func (e *MainRouteConflict) Error() string { return e.description }

var _ Netlink = &netlinksafe.Handle{}

// ApplyRoutes and ApplyRules move the pod toward the plan (routes first: a
// rule must never point at a table that is still empty). Each tolerates
// finding its result already there, so a repeated ADD converges instead of
// failing with "file exists".
func ApplyRoutes(h Netlink, p Plan) error {
	for i := range p.Routes {
		r := p.Routes[i]
		if r.Table == MainTable {
			if err := addMainRoute(h, &r); err != nil {
				return err
			}
			continue
		}
		// The attachment's table is its own (Choose refused sharing it), so
		// replacing converges whatever an earlier attempt left there.
		if err := h.RouteReplace(&r); err != nil {
			return fmt.Errorf("adding route %s: %w", describe(h, r), err)
		}
	}
	return nil
}

// ApplyRules adds the plan's source rules; see ApplyRoutes.
func ApplyRules(h Netlink, p Plan) error {
	for i := range p.Rules {
		r := p.Rules[i]
		// RuleAdd sends NLM_F_EXCL, so the kernel answers EEXIST only for an
		// identical rule: that one is ours already.
		if err := h.RuleAdd(&r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding rule %q: %w", FormatRule(r), err)
		}
	}
	return nil
}

// addMainRoute adds a route to the shared main table without replacing
// another attachment's route: main belongs to every interface of the pod.
func addMainRoute(h Netlink, r *netlink.Route) error {
	err := h.RouteAdd(r)
	if err == nil || !errors.Is(err, unix.EEXIST) {
		if err != nil {
			return fmt.Errorf("adding route %s: %w", describe(h, *r), err)
		}
		return nil
	}
	existing, lerr := h.RouteListFiltered(r.Family, &netlink.Route{Table: MainTable, Dst: r.Dst},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
	if lerr != nil {
		return fmt.Errorf("adding route %s: %w (and listing main: %v)", describe(h, *r), err, lerr)
	}
	for _, e := range existing {
		if sameRoute(e, *r) {
			return nil
		}
	}
	c := &MainRouteConflict{Want: *r, description: "the pod's main table already has another route to " + r.Dst.String()}
	if len(existing) > 0 {
		c.Existing = existing[0]
		c.ExistingLink, _ = h.LinkByIndex(existing[0].LinkIndex)
		c.description = "the pod's main table already has " + describe(h, existing[0])
	}
	return c
}

// Verify reports every route and rule of the plan that the pod lacks.
func Verify(h Netlink, p Plan) error {
	var missing []string
	for _, want := range p.Routes {
		have, err := h.RouteListFiltered(want.Family, &netlink.Route{Table: want.Table, LinkIndex: want.LinkIndex},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
		if err != nil {
			return fmt.Errorf("listing routes of table %d: %w", want.Table, err)
		}
		if !containsRoute(have, want) {
			missing = append(missing, "route "+describe(h, want))
		}
	}
	for _, want := range p.Rules {
		have, err := h.RuleList(want.Family)
		if err != nil {
			return fmt.Errorf("listing rules: %w", err)
		}
		if !containsRule(have, want) {
			missing = append(missing, fmt.Sprintf("rule %q", FormatRule(want)))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing in the pod: %s", strings.Join(missing, "; "))
	}
	return nil
}

// RemoveRules deletes the plan's rules, ignoring those already gone. Routes
// vanish with their interface; rules do not, which is why DEL must remove
// them.
func RemoveRules(h Netlink, p Plan) error {
	var errs []error
	for i := range p.Rules {
		r := p.Rules[i]
		if err := h.RuleDel(&r); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("deleting rule %q: %w", FormatRule(r), err))
		}
	}
	return errors.Join(errs...)
}

// RemoveRoutes deletes the plan's routes, ignoring those already gone.
func RemoveRoutes(h Netlink, p Plan) error {
	var errs []error
	for i := range p.Routes {
		r := p.Routes[i]
		if err := h.RouteDel(&r); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("deleting route %s: %w", describe(h, r), err))
		}
	}
	return errors.Join(errs...)
}

func isGone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV)
}

func containsRoute(have []netlink.Route, want netlink.Route) bool {
	for _, r := range have {
		if sameRoute(r, want) {
			return true
		}
	}
	return false
}

func sameRoute(a, b netlink.Route) bool {
	return a.LinkIndex == b.LinkIndex && a.Table == b.Table &&
		sameNet(a.Dst, b.Dst) && a.Gw.Equal(b.Gw) &&
		(b.Src == nil || a.Src.Equal(b.Src))
}

func sameNet(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return a == b
	}
	ao, _ := a.Mask.Size()
	bo, _ := b.Mask.Size()
	return ao == bo && a.IP.Equal(b.IP)
}

func containsRule(have []netlink.Rule, want netlink.Rule) bool {
	for _, r := range have {
		if r.Priority == want.Priority && r.Table == want.Table && sameNet(r.Src, want.Src) {
			return true
		}
	}
	return false
}

// RemoveRulesFrom deletes every rule whose source is exactly one of addrs,
// whatever its table and preference: what DEL needs when the table and
// preference chosen at ADD are unknown (no state, no prevResult).
func RemoveRulesFrom(h Netlink, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	all, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing rules: %w", err)
	}
	var errs []error
	for i := range all {
		r := all[i]
		if a, ok := hostSource(r); ok && slices.Contains(addrs, a) {
			if err := h.RuleDel(&r); err != nil && !isGone(err) {
				errs = append(errs, fmt.Errorf("deleting rule %q: %w", FormatRule(r), err))
			}
		}
	}
	return errors.Join(errs...)
}
