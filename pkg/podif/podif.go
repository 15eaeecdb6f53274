// Package podif configures the pod end of an attachment inside the pod's
// network namespace: its addresses, DAD, state and the marker that says which
// attachment created it. Every function takes a netlink handle bound to the
// pod's namespace, so no code here switches the thread's namespace.
package podif

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Marker is the interface alias of a pod interface created by multi-bridge.
// A repeated ADD of the same attachment finds it and converges; an interface
// of the same name that lacks it belongs to someone else and is refused.
func Marker(network, containerID string) string {
	return "multi-bridge:" + network + ":" + containerID
}

// NetworkOf reads the network name back from a marker.
func NetworkOf(alias string) (string, bool) {
	rest, ok := strings.CutPrefix(alias, "multi-bridge:")
	if !ok {
		return "", false
	}
	i := strings.LastIndex(rest, ":")
	if i < 0 {
		return "", false
	}
	return rest[:i], true
}

// Owned returns the pod interface named ifName and whether it carries the
// marker of this attachment. A missing interface is (nil, false, nil).
func Owned(h *netlinksafe.Handle, ifName, marker string) (netlink.Link, bool, error) {
	l, err := h.LinkByName(ifName)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return l, l.Attrs().Alias == marker, nil
}

// Settings are what Configure applies to the pod interface.
type Settings struct {
	Marker    string
	Addresses []netip.Prefix
	EnableDAD bool
}

// Configure marks the interface, sets its addresses and brings it up.
// Addresses are replaced, not added, so a repeated ADD converges.
func Configure(h *netlinksafe.Handle, sysctl func(key, value string) error, link netlink.Link, s Settings) error {
	name := link.Attrs().Name
	if err := h.LinkSetAlias(link, s.Marker); err != nil {
		return fmt.Errorf("marking %s: %w", name, err)
	}
	hasV6 := false
	for _, a := range s.Addresses {
		hasV6 = hasV6 || a.Addr().Is6()
	}
	if hasV6 && !s.EnableDAD {
		// Duplicate address detection holds a new IPv6 address "tentative"
		// for about two seconds, during which the pod cannot use it; IPAM
		// already guarantees uniqueness.
		for _, key := range []string{"accept_dad", "enhanced_dad"} {
			_ = sysctl(fmt.Sprintf("net/ipv6/conf/%s/%s", name, key), "0")
		}
	}
	// Up first: an IPv6 address added to a down interface stays tentative
	// until DAD runs after link-up, asynchronously, and a route with that
	// address as its source is refused (EINVAL) until then.
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	for _, a := range s.Addresses {
		addr := &netlink.Addr{IPNet: ipNet(a)}
		if a.Addr().Is6() && !s.EnableDAD {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("adding %s to %s: %w", a, name, err)
		}
	}
	if hasV6 && s.EnableDAD {
		return settle(h, link, 10*time.Second)
	}
	return nil
}

// settle waits for DAD to finish on every IPv6 address, failing on a
// duplicate, like ip.SettleAddresses but through a namespace-bound handle.
func settle(h *netlinksafe.Handle, link netlink.Link, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		addrs, err := h.AddrList(link, netlink.FAMILY_V6)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
		tentative := false
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("duplicate address detection failed for %s on %s", a.IPNet, link.Attrs().Name)
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				tentative = true
			}
		}
		if !tentative {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("IPv6 addresses of %s still tentative after %s", link.Attrs().Name, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Addresses lists the pod's addresses by interface, for telling whose a rule
// is. Link-local and loopback addresses are left out.
func Addresses(h *netlinksafe.Handle) (map[netip.Addr]string, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	owners := map[netip.Addr]string{}
	for _, l := range links {
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, err
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.IsLinkLocalUnicast() && !ip.IsLoopback() {
				owners[ip.Unmap()] = l.Attrs().Name
			}
		}
	}
	return owners, nil
}

// Delete removes the pod interface (and with it the veth peer on the node).
func Delete(h *netlinksafe.Handle, link netlink.Link) error {
	if err := h.LinkDel(link); err != nil && !errors.Is(err, syscall.ENODEV) && !errors.As(err, &netlink.LinkNotFoundError{}) {
		return fmt.Errorf("deleting %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// IsNotExist tells a missing namespace from other failures to open one.
func IsNotExist(err error) bool {
	return err != nil && (errors.Is(err, syscall.ENOENT) || strings.Contains(err.Error(), "no such file"))
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
