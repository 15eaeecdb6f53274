package routes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Reconciler reads and writes the main routing table of one network
// namespace: the node's.
type Reconciler struct {
	h netlinksafe.Handle
	// ns is the namespace handle when the reconciler works in another
	// namespace than its own; netns.None() otherwise.
	ns netns.NsHandle
}

// NewReconciler opens the namespace at nsPath ("" = the caller's own).
func NewReconciler(nsPath string) (*Reconciler, error) {
	r := &Reconciler{ns: netns.None()}
	if nsPath != "" {
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			return nil, fmt.Errorf("opening network namespace %s: %w", nsPath, err)
		}
		r.ns = ns
	}
	var err error
	if r.ns.IsOpen() {
		r.h, err = netlinksafe.NewHandleAt(r.ns)
	} else {
		r.h, err = netlinksafe.NewHandle()
	}
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return r, nil
}

// Close releases the handle and namespace.
func (r *Reconciler) Close() {
	if r.h.Handle != nil {
		r.h.Close()
	}
	if r.ns.IsOpen() {
		_ = r.ns.Close()
	}
}

// Connected lists the subnets the node is attached to (its addresses with
// their prefixes), loopback excluded.
func (r *Reconciler) Connected() ([]Connected, error) {
	addrs, err := r.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	var out []Connected
	for _, a := range addrs {
		if a.IPNet == nil || a.Scope == int(netlink.SCOPE_HOST) || a.IP.IsLoopback() {
			continue
		}
		p, ok := prefixOf(a.IPNet)
		if !ok {
			continue
		}
		out = append(out, Connected{Prefix: p, LinkIndex: a.LinkIndex})
	}
	return out, nil
}

// BridgeMarker is the alias the plugin gives the bridges it creates
// (bridge.Marker; repeated here so the agent does not link the plugin's
// node-side code).
const BridgeMarker = "multi-bridge"

// Foreign is what the node reaches other than through multi-bridge: the
// prefixes of its addresses and of its main table's routes, leaving out the
// default route, the agent's own routes and anything on a bridge the
// plugin made.
type Foreign struct {
	Addresses, Routes []netip.Prefix
	// Bridges are the subnets of multi-bridge's own bridges: a network's
	// own slice is there, but so are other networks' subnets.
	Bridges []netip.Prefix
}

// Foreign reads the node's Foreign prefixes.
func (r *Reconciler) Foreign() (Foreign, error) {
	links, err := r.h.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return Foreign{}, fmt.Errorf("listing links: %w", err)
	}
	ours := map[int]bool{}
	for _, l := range links {
		if l.Type() == "bridge" && l.Attrs().Alias == BridgeMarker {
			ours[l.Attrs().Index] = true
		}
	}
	connected, err := r.Connected()
	if err != nil {
		return Foreign{}, err
	}
	var out Foreign
	for _, c := range connected {
		if ours[c.LinkIndex] {
			out.Bridges = append(out.Bridges, c.Prefix.Masked())
		} else {
			out.Addresses = append(out.Addresses, c.Prefix.Masked())
		}
	}
	kernel, err := r.Kernel()
	if err != nil {
		return Foreign{}, err
	}
	for _, k := range kernel {
		if k.Dst.Bits() > 0 && k.Protocol != Protocol && !ours[k.LinkIndex] {
			out.Routes = append(out.Routes, k.Dst)
		}
	}
	return out, nil
}

// Kernel lists the unicast routes of the main table.
func (r *Reconciler) Kernel() ([]Kernel, error) {
	list, err := r.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	out := make([]Kernel, 0, len(list))
	for _, rt := range list {
		if rt.Type != unix.RTN_UNICAST {
			continue
		}
		k := Kernel{LinkIndex: rt.LinkIndex, Protocol: int(rt.Protocol), Priority: rt.Priority, Multipath: len(rt.MultiPath) > 0}
		if rt.Dst != nil {
			k.Dst, _ = prefixOf(rt.Dst)
		} else if rt.Family == unix.AF_INET6 {
			k.Dst = netip.MustParsePrefix("::/0")
		} else {
			k.Dst = netip.MustParsePrefix("0.0.0.0/0")
		}
		if gw, ok := netip.AddrFromSlice(rt.Gw); ok {
			k.Gw = gw.Unmap()
		}
		out = append(out, k)
	}
	return out, nil
}

// Apply carries out a plan. It goes on past a failing route, so one bad
// route never keeps the others away, and returns how many desired routes it
// could not install and all errors joined.
func (r *Reconciler) Apply(p Plan) (failed int, err error) {
	var errs []error
	for _, d := range p.Delete {
		rt := &netlink.Route{Dst: ipNet(d.Dst), Table: unix.RT_TABLE_MAIN, Protocol: netlink.RouteProtocol(d.Protocol), Priority: d.Priority}
		if err := r.h.RouteDel(rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("deleting route %s: %w", d, err))
		}
	}
	for _, d := range p.Replace {
		rt := &netlink.Route{
			Dst: ipNet(d.Dst), Gw: d.Gw.AsSlice(), LinkIndex: d.LinkIndex,
			Table: unix.RT_TABLE_MAIN, Protocol: Protocol, Scope: netlink.SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
		}
		if err := r.h.RouteReplace(rt); err != nil {
			failed++
			errs = append(errs, fmt.Errorf("adding route %s: %w", d, err))
		}
	}
	return failed, errors.Join(errs...)
}

// Watch calls notify whenever a route of the main table or an address of
// the namespace changes (someone deleted a route by hand, an interface got
// its address), until ctx ends. It resubscribes when the kernel drops the
// subscription (receive buffer overrun): the next reconcile repairs whatever
// was missed.
func (r *Reconciler) Watch(ctx context.Context, notify func(), onError func(error)) {
	for ctx.Err() == nil {
		if err := r.watchOnce(ctx, notify, onError); err != nil {
			onError(err)
		}
		notify()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (r *Reconciler) watchOnce(ctx context.Context, notify func(), onError func(error)) error {
	done := make(chan struct{})
	defer close(done)
	var ns *netns.NsHandle
	if r.ns.IsOpen() {
		ns = &r.ns
	}
	routes := make(chan netlink.RouteUpdate, 256)
	addrs := make(chan netlink.AddrUpdate, 64)
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{
		Namespace: ns, ErrorCallback: onError, ReceiveBufferSize: 4 << 20, ReceiveBufferForceSize: true,
	}); err != nil {
		return fmt.Errorf("subscribing to route changes: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{
		Namespace: ns, ErrorCallback: onError,
	}); err != nil {
		return fmt.Errorf("subscribing to address changes: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-routes:
			if !ok {
				return errors.New("route subscription closed")
			}
			if u.Table == unix.RT_TABLE_MAIN {
				notify()
			}
		case _, ok := <-addrs:
			if !ok {
				return errors.New("address subscription closed")
			}
			notify()
		}
	}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	ones, bits := n.Mask.Size()
	if !ok || bits == 0 {
		return netip.Prefix{}, false
	}
	if a.Is4In6() && bits == 128 {
		ones -= 96 // an IPv4 address with a 16-byte mask
	}
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
