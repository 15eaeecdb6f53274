package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/multi-bridge-cni/multi-bridge/pkg/bridge"
	"github.com/multi-bridge-cni/multi-bridge/pkg/podif"
	"github.com/multi-bridge-cni/multi-bridge/pkg/rules"
	"github.com/multi-bridge-cni/multi-bridge/pkg/store"
)

// Del implements CNI DEL. It succeeds when there is nothing left to remove:
// netns gone or empty, interface gone, no prevResult, called twice.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	c, err := p.begin("DEL", args)
	if err != nil {
		return err
	}
	defer c.done()
	ctx := context.Background()
	// After a killed ADD, this waits for its orphaned IPAM plugin.
	unlock, err := c.lockAttachment(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	defer unlock()

	st := store.New(c.net.DataDir(), c.net.Conf.Name)
	rec, err := st.Load(args.ContainerID, args.IfName)
	if err != nil {
		c.log.Error("ignoring unreadable state", "error", err)
	}
	ref := attachmentRef{ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns}
	if rec != nil {
		ref = refOf(rec)
		if args.Netns != "" {
			ref.Netns = args.Netns
		}
		// With an empty CNI_NETNS (the runtime's DEL after the container
		// died) the recorded path still reaches the pod if it is alive, and
		// the rules in it must go; openPod skips a path that is gone.
	}
	if prev, err := prevResultOf(c.net); err == nil && prev != nil {
		ref.addAddrs(resultAddrs(prev))
	}
	if node, _ := isNodeNS(ref.Netns); ref.Netns != "" && node {
		// Never a pod's: nothing to do inside it, and the IPAM plugin
		// refuses a DEL naming its own namespace.
		c.log.Info("CNI_NETNS is the node's own namespace; cleaning up the node side only", "netns", ref.Netns)
		ref.Netns = ""
	}
	pod, closePod := c.openPod(ref.Netns)
	defer closePod()
	if err := p.teardown(ctx, c, ref, pod, c.ipamArgs()); err != nil {
		c.log.Error("DEL failed", "error", err)
		return err
	}
	c.log.Info("DEL done", "podNetnsOpen", pod != nil, "elapsed", c.elapsed())
	return nil
}

// attachmentRef names an attachment to tear down and the addresses it is
// known to have had (from state and prevResult).
type attachmentRef struct {
	ContainerID string
	IfName      string
	Netns       string
	Addrs       []netip.Addr
	Slice       netip.Prefix // the node slice recorded at ADD, if any
	HostVeth    string       // the node end recorded at ADD, if any
}

func refOf(rec *store.Record) attachmentRef {
	return attachmentRef{ContainerID: rec.ContainerID, IfName: rec.IfName, Netns: rec.Netns, Addrs: recordAddrs(rec), Slice: rec.Subnet,
		HostVeth: rec.HostVeth}
}

// hostVeth is the node end of the attachment: as recorded at ADD, else the
// name ADD derives.
func (r attachmentRef) hostVeth(network string) string {
	if r.HostVeth != "" {
		return r.HostVeth
	}
	return bridge.HostVethName(network, r.ContainerID, r.IfName)
}

func (r *attachmentRef) addAddrs(addrs []netip.Addr) {
	for _, a := range addrs {
		if !slices.Contains(r.Addrs, a) {
			r.Addrs = append(r.Addrs, a)
		}
	}
}

// openPod opens the pod's netns for teardown. An empty, stale or gone path
// gives a nil handle: the kernel removed the pod's interfaces and rules with
// the namespace, so there is nothing to do inside it.
func (c *call) openPod(path string) (*netlinksafe.Handle, func()) {
	h, closePod, err := c.openPodChecked(path)
	if err != nil {
		c.log.Info("pod netns not usable; cleaning up the node side only", "netns", path, "reason", err)
	}
	return h, closePod
}

// openPodChecked is openPod with the reason a path is not usable: not a
// network namespace, or the node's own (never treated as a pod's, so a DEL
// naming it cannot remove the node's interfaces or rules).
func (c *call) openPodChecked(path string) (*netlinksafe.Handle, func(), error) {
	if path == "" {
		return nil, func() {}, nil
	}
	podNS, err := openPodNS(path)
	if err != nil {
		return nil, func() {}, err
	}
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(podNS.Fd()))
	if err != nil {
		_ = podNS.Close()
		return nil, func() {}, fmt.Errorf("netlink in pod netns: %w", err)
	}
	return &h, func() { h.Close(); _ = podNS.Close() }, nil
}

// teardown removes one attachment: its rules and interface in the pod (when
// the pod is reachable and the interface is ours), the host veth, the IPAM
// reservation and the state record. It is shared by DEL, GC and an ADD that
// finds a stale attachment, and it tolerates every part being gone already.
// The caller holds the attachment's lock.
func (p *Plugin) teardown(ctx context.Context, c *call, ref attachmentRef, pod *netlinksafe.Handle, ipamArgs *invoke.Args) error {
	var errs []error
	release := c.startRelease(ctx, ref, ipamArgs)
	if !releasesWithoutInterface(c.net.Conf.IPAM.Type) {
		// An IPAM plugin of another kind (dhcp) may need the interface to
		// release its lease: done before the interface goes, as the
		// reference bridge plugin does.
		release.wait()
	}
	if pod != nil {
		link, owned, err := podif.Owned(pod, ref.IfName, podif.Marker(c.net.Conf.Name, ref.ContainerID))
		if err != nil {
			errs = append(errs, err)
		}
		if owned {
			addrs, err := pod.AddrList(link, netlink.FAMILY_ALL)
			if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
				errs = append(errs, err)
			}
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.IsLinkLocalUnicast() {
					ref.addAddrs([]netip.Addr{ip.Unmap()})
				}
			}
		}
		addrs, err := c.releasableAddrs(pod, ref, owned)
		if err != nil {
			errs = append(errs, err)
		}
		if err := rules.RemoveRulesFrom(pod, addrs); err != nil {
			errs = append(errs, err)
		}
		if owned {
			if err := podif.Delete(pod, link); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := bridge.DetachByName(ref.hostVeth(c.net.Conf.Name)); err != nil {
		errs = append(errs, err)
	}
	c.log.Debug("interfaces removed", "elapsed", c.elapsed())
	if c.net.Layer3 {
		nothingLeased, err := release.wait()
		c.log.Debug("IPAM release done", "elapsed", c.elapsed())
		if nothingLeased {
			// No slice on this node and none recorded: no ADD can have
			// allocated anything for this attachment.
			c.log.Info("no node slice recorded or leased; nothing to release in IPAM")
			err = store.New(c.net.DataDir(), c.net.Conf.Name).Delete(ref.ContainerID, ref.IfName)
			return joinCNI(append(errs, err))
		}
		if err != nil {
			// Keep the record: a later DEL or GC retries the release.
			errs = append(errs, fmt.Errorf("releasing the IPAM reservation: %w", err))
			return joinCNI(errs)
		}
	}
	if err := store.New(c.net.DataDir(), c.net.Conf.Name).Delete(ref.ContainerID, ref.IfName); err != nil {
		errs = append(errs, err)
	}
	return joinCNI(errs)
}

// releasableAddrs are the addresses of ref whose source rules DEL may
// remove: not one another interface of the pod holds (prevResult is the
// runtime's word, and a forged one must not take another attachment's rules
// away), nor one held by an interface of ref's name that is not ours.
func (c *call) releasableAddrs(pod *netlinksafe.Handle, ref attachmentRef, owned bool) ([]netip.Addr, error) {
	owners, err := podif.Addresses(pod)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range ref.Addrs {
		if holder, held := owners[a]; held && (holder != ref.IfName || !owned) {
			c.log.Info("keeping the rules of an address another interface holds", "address", a, "interface", holder)
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// releasesWithoutInterface: IPAM plugins that keep their reservations in
// files and need nothing of the pod to release them.
func releasesWithoutInterface(ipamType string) bool {
	return ipamType == "host-local" || ipamType == "static"
}

// release is the IPAM plugin's DEL of one attachment, running while the
// interfaces are deleted: deleting a veth waits for the kernel's RCU grace
// periods (about 15 ms, half of a DEL), time the IPAM plugin's process can
// use. The address may be handed out again a few milliseconds before the
// old interface is gone, as with the reference bridge plugin, which
// releases it first.
type release struct {
	done          chan struct{}
	nothingLeased bool
	err           error
}

// startRelease starts the IPAM release of ref (nothing for a layer-2
// network).
func (c *call) startRelease(ctx context.Context, ref attachmentRef, ipamArgs *invoke.Args) *release {
	r := &release{done: make(chan struct{})}
	if !c.net.Layer3 {
		close(r.done)
		return r
	}
	conf, err := c.ipamConf(ref.Slice)
	var cniErr *types.Error
	if errors.As(err, &cniErr) && cniErr.Code == types.ErrTryAgainLater && !ref.Slice.IsValid() {
		r.nothingLeased = true
		close(r.done)
		return r
	}
	if err != nil {
		r.err = err
		close(r.done)
		return r
	}
	a := *ipamArgs
	a.ContainerID, a.IfName, a.NetNS = ref.ContainerID, ref.IfName, ref.Netns
	go func() {
		defer close(r.done)
		_, r.err = c.runIPAM(ctx, "DEL", conf, &a)
	}()
	return r
}

// wait returns the outcome of the release.
func (r *release) wait() (nothingLeased bool, err error) {
	<-r.done
	return r.nothingLeased, r.err
}

// joinCNI joins errors into one CNI error, keeping the code and details of
// the first CNI error among them (and each message once).
func joinCNI(errs []error) error {
	var msgs []string
	var first *types.Error
	for _, err := range errs {
		if err == nil {
			continue
		}
		var e *types.Error
		if errors.As(err, &e) {
			if first == nil {
				first = e
			}
			// Keep the context a wrapper added ("releasing the IPAM
			// reservation: ...").
			prefix := strings.TrimSuffix(err.Error(), e.Error())
			msgs = append(msgs, prefix+e.Msg)
			continue
		}
		msgs = append(msgs, err.Error())
	}
	switch {
	case len(msgs) == 0:
		return nil
	case first != nil:
		return types.NewError(first.Code, strings.Join(msgs, "; "), first.Details)
	}
	return types.NewError(types.ErrInternal, strings.Join(msgs, "; "), "")
}
