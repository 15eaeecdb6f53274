package plugin

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/multi-bridge-cni/multi-bridge/pkg/bridge"
	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
	"github.com/multi-bridge-cni/multi-bridge/pkg/masq"
	"github.com/multi-bridge-cni/multi-bridge/pkg/podif"
	"github.com/multi-bridge-cni/multi-bridge/pkg/rules"
	"github.com/multi-bridge-cni/multi-bridge/pkg/store"
)

// Check implements CNI CHECK: the attachment described by prevResult is
// still in place, on the node and in the pod. The first difference found is
// the error, naming what is missing.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	c, err := p.begin("CHECK", args)
	if err != nil {
		return err
	}
	defer c.done()
	err = p.check(context.Background(), c)
	if err != nil {
		c.log.Error("CHECK failed", "error", err)
	}
	return err
}

func (p *Plugin) check(ctx context.Context, c *call) error {
	n, args := c.net, c.args
	prev, err := prevResultOf(n)
	if err != nil {
		return err
	}
	if prev == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs a prevResult", "run CHECK through a runtime or libcni, which pass the cached ADD result")
	}
	rec, err := store.New(n.DataDir(), n.Conf.Name).Load(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	choice, err := checkedChoice(n, rec)
	if err != nil {
		return err
	}
	if n.Layer3 {
		var recorded netip.Prefix
		if rec != nil {
			recorded = rec.Subnet
		}
		conf, err := c.ipamConf(recorded)
		if err != nil {
			return err
		}
		if _, err := c.runIPAM(ctx, "CHECK", conf, c.ipamArgs()); err != nil {
			return err
		}
	}
	hostVeth := bridge.HostVethName(n.Conf.Name, args.ContainerID, args.IfName)
	if rec != nil && rec.HostVeth != "" {
		hostVeth = rec.HostVeth
	}
	if err := checkNode(n, hostVeth, prev); err != nil {
		return err
	}
	pod, closePod, err := c.openPodChecked(args.Netns)
	defer closePod()
	if err != nil {
		return err
	}
	if pod == nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty", "CHECK needs the pod's network namespace")
	}
	link, err := checkPodInterface(pod, n, args, prev)
	if err != nil {
		return err
	}
	plan := rules.BuildPlan(attachmentOf(n, args.IfName, link.Attrs().Index, prev, choice))
	if err := rules.Verify(pod, plan); err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "an ADD with the same arguments restores it (ADD converges)")
	}
	if n.Conf.IPMasq {
		backend, err := p.opts.Masquerade(n.MasqMode)
		if err != nil {
			return err
		}
		if err := backend.Verify(ctx, n.Conf.Name, masq.Plan(subnetsOf(prev), n.Pool)); err != nil {
			return types.NewError(types.ErrInternal, err.Error(), "an ADD on this network restores it")
		}
	}
	return nil
}

// checkedChoice is the table and preference the attachment should have: the
// ones recorded at ADD, or the configured ones when there is no record.
func checkedChoice(n *config.Network, rec *store.Record) (rules.Choice, error) {
	if rec != nil {
		return rules.Choice{Table: rec.Table, Priority: rec.Priority}, nil
	}
	switch {
	case n.Routing.Mode == config.RoutingMain || !n.Layer3:
		return rules.Choice{Table: rules.MainTable}, nil
	case n.Routing.Mode == config.RoutingTable && n.Routing.Priority != 0:
		return rules.Choice{Table: n.Routing.Table, Priority: n.Routing.Priority}, nil
	}
	return rules.Choice{}, types.NewError(types.ErrInternal,
		"no state recorded for this attachment, so its automatically chosen table and priority are unknown",
		"the attachment was not added by this node's multi-bridge or its state was lost; DEL and ADD it again")
}

func checkNode(n *config.Network, hostVeth string, prev *current.Result) error {
	br, err := bridge.Lookup(n.Bridge)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("bridge %q: %v", n.Bridge, err), "")
	}
	if n.Conf.IsGateway {
		addrs, err := netlinksafe.AddrList(br, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, gw := range gatewayNets(prev) {
			if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == gw.String() }) {
				return types.NewError(types.ErrInternal, fmt.Sprintf("bridge %q lacks the gateway address %s", n.Bridge, gw), "an ADD on this network restores it")
			}
		}
	}
	host, err := netlinksafe.LinkByName(hostVeth)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("host veth %q: %v", hostVeth, err), "")
	}
	if host.Attrs().MasterIndex != br.Index {
		return types.NewError(types.ErrInternal, fmt.Sprintf("host veth %q is not attached to bridge %q", hostVeth, n.Bridge), "")
	}
	return nil
}

func checkPodInterface(pod *netlinksafe.Handle, n *config.Network, args *skel.CmdArgs, prev *current.Result) (netlink.Link, error) {
	link, owned, err := podif.Owned(pod, args.IfName, podif.Marker(n.Conf.Name, args.ContainerID))
	if err != nil {
		return nil, err
	}
	if link == nil || !owned {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("interface %q of this attachment is missing from the pod", args.IfName), "")
	}
	for _, iface := range prev.Interfaces {
		if iface.Sandbox != "" && iface.Name == args.IfName && iface.Mac != "" && iface.Mac != link.Attrs().HardwareAddr.String() {
			return nil, types.NewError(types.ErrInternal, fmt.Sprintf("interface %q has MAC %s, prevResult says %s", args.IfName, link.Attrs().HardwareAddr, iface.Mac), "")
		}
	}
	addrs, err := pod.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var have []netip.Prefix
	for _, a := range addrs {
		have = append(have, prefixOf(*a.IPNet))
	}
	for _, want := range resultPrefixes(prev) {
		if !slices.Contains(have, want) {
			return nil, types.NewError(types.ErrInternal, fmt.Sprintf("address %s is missing from interface %q", want, args.IfName), "")
		}
	}
	return link, nil
}
