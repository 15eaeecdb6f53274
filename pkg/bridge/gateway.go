package bridge

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsureGateways puts each gateway (address with the subnet's prefix length)
// on the bridge and returns those this call added. An address of another
// host in the same subnet is an operator's mistake unless forceAddress asks
// to replace it, which it only does on a bridge multi-bridge created.
func EnsureGateways(br *netlink.Bridge, gateways []*net.IPNet, forceAddress bool) ([]*net.IPNet, error) {
	var added []*net.IPNet
	for _, gw := range gateways {
		ok, err := ensureGateway(br, gw, forceAddress)
		if err != nil {
			return added, err
		}
		if ok {
			added = append(added, gw)
		}
	}
	return added, nil
}

func ensureGateway(link *netlink.Bridge, gw *net.IPNet, force bool) (bool, error) {
	fam := netlink.FAMILY_V4
	if gw.IP.To4() == nil {
		fam = netlink.FAMILY_V6
	}
	addrs, err := netlinksafe.AddrList(link, fam)
	if err != nil {
		return false, fmt.Errorf("listing addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IP.Equal(gw.IP) {
			return false, nil
		}
		if a.Contains(gw.IP) || gw.Contains(a.IP) {
			if !force {
				return false, AddressConflict("%s already has %s, not the gateway %s of this network; set \"forceAddress\": true to replace it, or fix the gateway", link.Attrs().Name, a.IPNet, gw)
			}
			if !CreatedByUs(link) {
				return false, AddressConflict("%s already has %s, not the gateway %s of this network, and forceAddress only replaces addresses on bridges multi-bridge created; remove the address by hand or use another bridge", link.Attrs().Name, a.IPNet, gw)
			}
			if err := netlink.AddrDel(link, &a); err != nil {
				return false, fmt.Errorf("removing %s from %s: %w", a.IPNet, link.Attrs().Name, err)
			}
		}
	}
	// NODAD: a gateway that stays "tentative" for a second or two makes the
	// first packets of every new pod fail.
	addr := &netlink.Addr{IPNet: gw, Flags: unix.IFA_F_NODAD}
	if err := netlink.AddrAdd(link, addr); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			return false, nil
		}
		return false, fmt.Errorf("adding gateway %s to %s: %w", gw, link.Attrs().Name, err)
	}
	return true, nil
}

// AddressConflictError is a gateway that would clash with an address the
// bridge already has: the network's configuration must change.
type AddressConflictError struct{ msg string }

func (e *AddressConflictError) Error() string { return e.msg }

// AddressConflict formats an AddressConflictError.
func AddressConflict(format string, args ...any) error {
	return &AddressConflictError{msg: fmt.Sprintf(format, args...)}
}

// RemoveGateways takes addresses off link, ignoring those already gone.
func RemoveGateways(link netlink.Link, gateways []*net.IPNet) error {
	var errs []error
	for _, gw := range gateways {
		err := netlink.AddrDel(link, &netlink.Addr{IPNet: gw})
		if err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("removing gateway %s from %s: %w", gw, link.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// HasPorts reports whether any interface other than except is enslaved to
// the bridge: a gateway address is only taken back when no pod can use it.
func HasPorts(br *netlink.Bridge, except string) (bool, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return false, err
	}
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex == br.Index && a.Name != except {
			return true, nil
		}
	}
	return false, nil
}

// CheckOverlap refuses to put subnets on the bridge named bridgeName when
// the node already has an address in one of them on another interface: the
// node would then route that subnet two ways, or (an attacker's NAD naming
// the node's own LAN) lose its own traffic to the pods.
func CheckOverlap(bridgeName string, subnets []netip.Prefix) error {
	if len(subnets) == 0 {
		return nil
	}
	own := 0
	if l, err := netlinksafe.LinkByName(bridgeName); err == nil {
		own = l.Attrs().Index
	}
	// One dump per family the subnets use: a node with a thousand pods has
	// a thousand veths, each with an IPv6 link-local address, and a round
	// trip per link (or an IPv6 dump for an IPv4 subnet) would cost every
	// ADD milliseconds.
	var addrs []netlink.Addr
	for _, family := range families(subnets) {
		got, err := netlinksafe.AddrList(nil, family)
		if err != nil {
			return fmt.Errorf("listing the node's addresses: %w", err)
		}
		addrs = append(addrs, got...)
	}
	for _, a := range addrs {
		if a.LinkIndex == own {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		theirs := netip.PrefixFrom(ip.Unmap(), ones)
		for _, s := range subnets {
			if !s.Overlaps(theirs) {
				continue
			}
			kind, name := "interface", fmt.Sprintf("#%d", a.LinkIndex)
			if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
				name = l.Attrs().Name
				if l.Type() == "bridge" {
					kind = "bridge"
				}
			}
			return fmt.Errorf("subnet %s of bridge %q overlaps %s on %s %q", s, bridgeName, theirs, kind, name)
		}
	}
	return nil
}

func families(subnets []netip.Prefix) []int {
	var v4, v6 bool
	for _, s := range subnets {
		v4, v6 = v4 || s.Addr().Is4(), v6 || s.Addr().Is6()
	}
	var out []int
	if v4 {
		out = append(out, netlink.FAMILY_V4)
	}
	if v6 {
		out = append(out, netlink.FAMILY_V6)
	}
	return out
}

// Unheld are the subnets the bridge holds no address of yet (same prefix):
// the ones a gateway would newly put on the node. A subnet the bridge holds
// was checked against the node's other addresses and routes when its
// gateway went on, so every pod after a network's first skips the node-wide
// dumps of CheckOverlap and RoutedElsewhere.
func Unheld(bridgeName string, subnets []netip.Prefix) ([]netip.Prefix, error) {
	l, err := netlinksafe.LinkByName(bridgeName)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return subnets, nil
	}
	if err != nil {
		return nil, err
	}
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", bridgeName, err)
	}
	held := map[netip.Prefix]bool{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			ones, _ := a.Mask.Size()
			held[netip.PrefixFrom(ip.Unmap(), ones).Masked()] = true
		}
	}
	var out []netip.Prefix
	for _, s := range subnets {
		if !held[s.Masked()] {
			out = append(out, s)
		}
	}
	return out, nil
}

// MissingGateways are the gateways not yet on the bridge.
func MissingGateways(br *netlink.Bridge, gateways []*net.IPNet) ([]*net.IPNet, error) {
	addrs, err := netlinksafe.AddrList(br, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", br.Name, err)
	}
	var missing []*net.IPNet
	for _, gw := range gateways {
		ones, _ := gw.Mask.Size()
		found := false
		for _, a := range addrs {
			if aOnes, _ := a.Mask.Size(); a.IP.Equal(gw.IP) && aOnes == ones {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, gw)
		}
	}
	return missing, nil
}

// RoutedElsewhere refuses to put subnets on the bridge named bridgeName when
// the node routes part of them elsewhere (a route of the main table other
// than the default route, not on this bridge and not one of the node agent's
// routes to other nodes' slices): the bridge's connected route would take
// that traffic over, and a pod could answer for addresses the node reaches
// through its uplink.
func RoutedElsewhere(bridgeName string, subnets []netip.Prefix, agentProtocol int) error {
	own := 0
	if l, err := netlinksafe.LinkByName(bridgeName); err == nil {
		own = l.Attrs().Index
	}
	for _, family := range families(subnets) {
		routes, err := netlinksafe.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("listing the node's routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst == nil || r.LinkIndex == own || int(r.Protocol) == agentProtocol {
				continue
			}
			ones, _ := r.Dst.Mask.Size()
			ip, ok := netip.AddrFromSlice(r.Dst.IP)
			if !ok || ones == 0 {
				continue
			}
			theirs := netip.PrefixFrom(ip.Unmap(), ones)
			for _, s := range subnets {
				if s.Overlaps(theirs) {
					return fmt.Errorf("subnet %s of bridge %q overlaps the node's route to %s%s", s, bridgeName, theirs, describeRoute(r))
				}
			}
		}
	}
	return nil
}

func describeRoute(r netlink.Route) string {
	out := ""
	if r.Gw != nil {
		out += " via " + r.Gw.String()
	}
	if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
		out += " dev " + l.Attrs().Name
	}
	return out
}
