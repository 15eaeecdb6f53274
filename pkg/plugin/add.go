package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/routes"
	"github.com/multi-bridge-cni/multi-bridge/pkg/bridge"
	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
	"github.com/multi-bridge-cni/multi-bridge/pkg/masq"
	"github.com/multi-bridge-cni/multi-bridge/pkg/podif"
	"github.com/multi-bridge-cni/multi-bridge/pkg/rules"
	"github.com/multi-bridge-cni/multi-bridge/pkg/store"
)

// Add implements CNI ADD: the result, in the configuration's spec version,
// is the only thing written to stdout.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	res, err := p.AddResult(args)
	if err != nil {
		return err
	}
	return res.Print()
}

// AddResult runs ADD and returns its result converted to the configuration's
// spec version.
func (p *Plugin) AddResult(args *skel.CmdArgs) (types.Result, error) {
	c, err := p.begin("ADD", args)
	if err != nil {
		return nil, err
	}
	defer c.done()
	ctx := context.Background()
	unlock, err := c.lockAttachment(args.ContainerID, args.IfName)
	if err != nil {
		return nil, err
	}
	defer unlock()

	a, err := p.prepareAdd(ctx, c)
	if err != nil {
		c.log.Error("ADD refused", "error", err)
		return nil, err
	}
	defer a.close()
	if err := runSteps(ctx, c.log, a.steps(), p.opts.AfterStep); err != nil {
		return nil, err
	}
	c.log.Info("ADD done", "addresses", a.addressList(), "table", a.choice.Table, "priority", a.choice.Priority, "repeat", a.prior != nil, "elapsed", c.elapsed())
	return resultForVersion(a.result, c.net.ResultVersion())
}

// resultForVersion converts the result to the configuration's version.
// Fields that 1.1.0 added (route table, MTU, scope...; interface MTU) live in
// types shared with older versions and would be printed for them too, so
// they are cleared for an older reader.
func resultForVersion(res *current.Result, version string) (types.Result, error) {
	if newer, err := cniversion.GreaterThanOrEqualTo(version, "1.1.0"); err != nil || newer {
		return res.GetAsVersion(version)
	}
	out := *res
	out.Interfaces = nil
	for _, i := range res.Interfaces {
		ic := *i
		ic.Mtu, ic.SocketPath, ic.PciID = 0, "", ""
		out.Interfaces = append(out.Interfaces, &ic)
	}
	out.Routes = nil
	for _, r := range res.Routes {
		out.Routes = append(out.Routes, &types.Route{Dst: r.Dst, GW: r.GW})
	}
	return out.GetAsVersion(version)
}

// addition is the state of one ADD as its steps fill it in; each step
// records what it changed so that its undo takes back exactly that.
type addition struct {
	p     *Plugin
	c     *call
	podNS ns.NetNS
	pod   *netlinksafe.Handle
	store store.Store

	// prior is set when this ADD repeats a live attachment: it converges
	// toward the same state instead of failing on what already exists.
	prior  *store.Record
	choice rules.Choice
	// replaced is the plan of the prior table and preference, when a
	// repeated ADD changes them.
	replaced *rules.Plan

	br            *netlink.Bridge
	createdBridge bool
	bridgeHold    func() // the bridge lock (shared or not), until the veth is on the bridge
	host          netlink.Link
	podLink       netlink.Link
	createdVeth   bool
	ipam          *current.Result
	ipamCalled    bool
	slice         netip.Prefix // this node's slice of a nodeSubnets network
	savedState    bool
	addedGateways []*net.IPNet
	plan          rules.Plan
	masq          masq.Backend
	masqChanged   bool
	result        *current.Result
}

// prepareAdd does everything that can refuse the ADD before anything is
// changed: open the pod, tell a repeated ADD from a name clash, and choose
// the table and preference against the pod's current rules.
func (p *Plugin) prepareAdd(ctx context.Context, c *call) (*addition, error) {
	podNS, err := openPodNS(c.args.Netns)
	if err != nil {
		return nil, err
	}
	pod, err := netlinksafe.NewHandleAt(netns.NsHandle(podNS.Fd()))
	if err != nil {
		_ = podNS.Close()
		return nil, fmt.Errorf("netlink in pod netns: %w", err)
	}
	a := &addition{p: p, c: c, podNS: podNS, pod: &pod, store: store.New(c.net.DataDir(), c.net.Conf.Name)}
	if err := a.prepare(ctx); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

func (a *addition) prepare(ctx context.Context) error {
	c := a.c
	if err := bridge.CheckSpec(bridge.Spec{Name: c.net.Bridge, MTU: c.net.Conf.MTU, Promisc: c.net.Conf.PromiscMode}); err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid \"bridge\" %q: %v", c.net.Bridge, err),
			"name another bridge in the network configuration (or lower \"mtu\", drop \"promiscMode\")")
	}
	if err := a.detectRepeat(ctx); err != nil {
		return err
	}
	if err := a.checkDefaultRoute(); err != nil {
		return err
	}
	if !c.net.Layer3 {
		return nil
	}
	var ours []netip.Addr
	if a.prior != nil {
		ours = recordAddrs(a.prior)
	} else {
		// Without this node's slice there is nothing to allocate from:
		// refuse before changing anything.
		var err error
		if a.slice, err = c.nodeSlice(netip.Prefix{}); err != nil {
			return err
		}
	}
	podRules, err := a.pod.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing the pod's rules: %w", err)
	}
	owners, err := podif.Addresses(a.pod)
	if err != nil {
		return fmt.Errorf("listing the pod's addresses: %w", err)
	}
	a.choice, err = rules.Choose(c.net.Routing, c.args.IfName, ours, rules.PodRules{Rules: podRules, Owners: owners})
	if err != nil {
		return err
	}
	if err := a.checkChoice(); err != nil {
		return err
	}
	if err := a.checkOverlap(a.declaredSubnets()); err != nil {
		return err
	}
	return a.planReplacement()
}

// checkChoice holds an automatic table or preference to the node policy
// (a configured one was checked with the rest of the configuration).
func (a *addition) checkChoice() error {
	r := a.c.net.Routing
	if r.Mode == config.RoutingAuto {
		if err := a.c.policy.CheckTable(a.choice.Table); err != nil {
			return err
		}
	}
	if r.Mode != config.RoutingMain && r.Priority == 0 {
		return a.c.policy.CheckPriority(a.choice.Priority)
	}
	return nil
}

// declaredSubnets are the subnets the bridge's gateway addresses will be in,
// as far as the configuration tells before IPAM runs: this node's slice, or
// host-local's and static's subnets.
func (a *addition) declaredSubnets() []netip.Prefix {
	if a.slice.IsValid() {
		return []netip.Prefix{a.slice}
	}
	var out []netip.Prefix
	for _, d := range a.c.net.DeclaredSubnets() {
		if d.Field != "static IP request" && d.Field != "nodeSubnets.pool" {
			out = append(out, d.Prefix)
		}
	}
	return out
}

// checkOverlap refuses gateway subnets the node already has elsewhere. Only
// a network whose bridge holds gateways puts its subnets on the node; pure
// layer-2 networks may share a subnet (their routes live in the pods).
func (a *addition) checkOverlap(subnets []netip.Prefix) error {
	if !a.c.net.Conf.IsGateway || a.prior != nil {
		return nil
	}
	subnets, err := bridge.Unheld(a.c.net.Bridge, subnets)
	if err != nil {
		return err
	}
	if err := bridge.CheckOverlap(a.c.net.Bridge, subnets); err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(),
			"give each bridge's network its own subnet, outside the node's other subnets")
	}
	// A subnet the node routes elsewhere is refused unless the node policy
	// names it: an administrator may carve pod subnets out of a range the
	// node's uplink also routes, a NAD author may not.
	var unsanctioned []netip.Prefix
	for _, s := range subnets {
		if !a.c.policy.Sanctions(s) {
			unsanctioned = append(unsanctioned, s)
		}
	}
	if err := bridge.RoutedElsewhere(a.c.net.Bridge, unsanctioned, routes.Protocol); err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(),
			"give the network a subnet the node does not route elsewhere, or list it in the node policy's allowedSubnets")
	}
	return nil
}

// planReplacement: a repeated ADD whose configuration now asks for another
// table or preference converges to the new ones, so the routes and rules of
// the old ones are planned for removal.
func (a *addition) planReplacement() error {
	p := a.prior
	if p == nil || (p.Table == a.choice.Table && p.Priority == a.choice.Priority) {
		return nil
	}
	res, err := recordResult(p)
	if err != nil {
		return err
	}
	old := rules.BuildPlan(attachmentOf(a.c.net, a.c.args.IfName, a.podLink.Attrs().Index, res, rules.Choice{Table: p.Table, Priority: p.Priority}))
	a.replaced = &old
	return nil
}

func (a *addition) close() {
	a.releaseBridge()
	a.pod.Close()
	_ = a.podNS.Close()
}

// hostVethName is the node end of this attachment: as recorded when it
// exists already (an attachment made before host veths were named per
// network keeps its name), else derived.
func (a *addition) hostVethName() string {
	if a.prior != nil && a.prior.HostVeth != "" {
		return a.prior.HostVeth
	}
	return bridge.HostVethName(a.c.net.Conf.Name, a.c.args.ContainerID, a.c.args.IfName)
}

// lockBridge takes the network's bridge lock exclusively.
func (a *addition) lockBridge() (unlock func(), err error) {
	return bridge.Lock(a.c.net.RuntimeDir(), a.c.net.Bridge)
}

// releaseBridge lets go of the bridge lock ensureBridge kept.
func (a *addition) releaseBridge() {
	if a.bridgeHold != nil {
		a.bridgeHold()
		a.bridgeHold = nil
	}
}

func (a *addition) detectRepeat(ctx context.Context) error {
	args := a.c.args
	link, owned, err := podif.Owned(a.pod, args.IfName, podif.Marker(a.c.net.Conf.Name, args.ContainerID))
	if err != nil {
		return err
	}
	rec, err := a.store.Load(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	if link != nil && !owned {
		if !bridge.IsHostEndOf(bridge.HostVethName(a.c.net.Conf.Name, args.ContainerID, args.IfName), link.Attrs().Index) {
			return types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("CNI_IFNAME %q: the pod already has that interface, not created by multi-bridge for network %q and container %s", args.IfName, a.c.net.Conf.Name, args.ContainerID),
				"give this attachment another interface name (the \"interface\" of the network selection)")
		}
		// The peer of this attachment's host veth: made by an ADD of this
		// attachment that was killed before it marked the interface.
	}
	switch {
	case link != nil && rec != nil:
		a.prior, a.podLink, a.slice = rec, link, rec.Subnet
	case link != nil || rec != nil:
		// An interrupted ADD (killed before it recorded the attachment), or
		// an interface deleted behind our back: release what it may hold and
		// start over. The IPAM plugin would refuse a second allocation for
		// an attachment that still holds one.
		a.c.log.Info("cleaning up an interrupted attachment before ADD", "interface", link != nil, "record", rec != nil)
		ref := attachmentRef{ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns}
		if rec != nil {
			ref = refOf(rec)
		}
		if link != nil {
			if err := podif.Delete(a.pod, link); err != nil {
				return err
			}
		}
		return a.p.teardown(ctx, a.c, ref, a.pod, a.c.ipamArgs())
	}
	return nil
}

func (a *addition) steps() []step {
	n := a.c.net
	s := []step{
		{name: StepBridge, do: a.ensureBridge, undo: a.removeBridge},
		{name: StepVeth, do: a.attachVeth, undo: a.detachVeth},
	}
	if n.Layer3 {
		s = append(s,
			step{name: StepIPAM, do: a.allocate, undo: a.release},
			step{name: StepState, do: a.saveState, undo: a.forgetState},
			step{name: StepAddresses, do: a.configureAddresses},
		)
		if n.Conf.IsGateway {
			s = append(s, step{name: StepGateway, do: a.ensureGateway, undo: a.removeGateway})
		}
		s = append(s,
			step{name: StepRoutes, do: a.applyRoutes, undo: a.removeRoutes},
			step{name: StepRules, do: a.applyRules, undo: a.removeRules},
		)
		if n.Conf.IPMasq {
			s = append(s, step{name: StepMasquerade, do: a.ensureMasquerade, undo: a.removeMasquerade})
		}
	} else {
		s = append(s,
			step{name: StepState, do: a.saveState, undo: a.forgetState},
			step{name: StepAddresses, do: a.configureAddresses},
		)
	}
	return append(s, step{name: "result", do: a.buildResult})
}

func (a *addition) ensureBridge(context.Context) error {
	n := a.c.net
	spec := bridge.Spec{Name: n.Bridge, MTU: n.Conf.MTU, Promisc: n.Conf.PromiscMode}
	// Every ADD after a bridge's first finds it ready: the lock is taken
	// shared then, as all ADDs of the bridge would otherwise queue on it (a
	// holder preempted among 200 plugin processes on two CPUs holds up
	// every one of them). It is held until the veth is on the bridge
	// (attachVeth), so the bridge's creator cannot remove it meanwhile.
	shared, err := bridge.SharedLock(n.RuntimeDir(), n.Bridge)
	if err != nil {
		return err
	}
	if br, ok := bridge.Ready(spec); ok {
		a.br, a.bridgeHold = br, shared
		return nil
	}
	shared()
	// Here too the lock is kept until the veth is on the bridge: an ADD
	// that found the bridge made by another one meanwhile must be safe
	// from that one's rollback as well.
	unlock, err := a.lockBridge()
	if err != nil {
		return err
	}
	a.bridgeHold = unlock
	a.br, a.createdBridge, err = bridge.Ensure(spec)
	return err
}

// removeBridge takes back a bridge this ADD created, unless another ADD
// came to use it meanwhile.
func (a *addition) removeBridge(context.Context) error {
	// The step's own hold goes first: taking the lock again on another
	// descriptor would wait for ourselves.
	a.releaseBridge()
	if !a.createdBridge {
		return nil
	}
	n := a.c.net
	unlock, err := a.lockBridge()
	if err != nil {
		return err
	}
	defer unlock()
	return bridge.RemoveIfUnused(n.Bridge)
}

func (a *addition) attachVeth(context.Context) error {
	defer a.releaseBridge()
	n, args := a.c.net, a.c.args
	hostName := a.hostVethName()
	if a.prior != nil {
		host, err := netlinksafe.LinkByName(hostName)
		if err != nil {
			return fmt.Errorf("host end %s of the existing %s: %w", hostName, args.IfName, err)
		}
		a.host = host
		return nil
	}
	att, err := bridge.Attach(a.br, bridge.Port{
		Network: n.Conf.Name, ContainerID: args.ContainerID, IfName: args.IfName, PodNS: a.podNS,
		MTU: n.Conf.MTU, MAC: n.MAC, Hairpin: n.Conf.HairpinMode,
	})
	if att != nil {
		a.createdVeth = true
		a.host = att.Host
	}
	if err != nil {
		return err
	}
	a.podLink, err = a.pod.LinkByName(args.IfName)
	return err
}

func (a *addition) detachVeth(context.Context) error {
	if !a.createdVeth {
		return nil
	}
	return bridge.DetachByName(bridge.HostVethName(a.c.net.Conf.Name, a.c.args.ContainerID, a.c.args.IfName))
}

func (a *addition) allocate(ctx context.Context) error {
	if a.prior != nil {
		res, err := recordResult(a.prior)
		a.ipam = res
		return err
	}
	conf, err := a.c.ipamConf(a.slice)
	if err != nil {
		return err
	}
	a.ipamCalled = true
	raw, err := a.c.runIPAM(ctx, "ADD", conf, a.c.ipamArgs())
	if err != nil {
		return err
	}
	res, err := current.NewResultFromResult(raw)
	if err != nil {
		return fmt.Errorf("IPAM plugin %q returned an unusable result: %w", a.c.net.Conf.IPAM.Type, err)
	}
	if len(res.IPs) == 0 {
		return types.NewError(types.ErrInternal, fmt.Sprintf("IPAM plugin %q returned no IP address", a.c.net.Conf.IPAM.Type), "check the ipam section of the network configuration")
	}
	a.ipam = res
	if err := completeIPAMResult(a.c.net, res); err != nil {
		return err
	}
	var gateways []netip.Addr
	for _, g := range gatewayNets(res) {
		gateways = append(gateways, prefixOf(*g).Addr())
	}
	return a.c.policy.CheckAddresses(a.c.net.Conf.IPAM.Type, resultPrefixes(res), gateways)
}

func (a *addition) release(ctx context.Context) error {
	if !a.ipamCalled {
		return nil
	}
	conf, err := a.c.ipamConf(a.slice)
	if err != nil {
		return err
	}
	_, err = a.c.runIPAM(ctx, "DEL", conf, a.c.ipamArgs())
	return err
}

// completeIPAMResult fills in what the plugin promises beyond IPAM: the
// gateway of a network whose bridge is its gateway, and the default route of
// isDefaultGateway. Every default route names its gateway: Multus's
// network-status reads the gateway from there.
func completeIPAMResult(n *config.Network, res *current.Result) error {
	for _, ipc := range res.IPs {
		if ipc.Gateway == nil && n.Conf.IsGateway {
			ipc.Gateway = ip.NextIP(ipc.Address.IP.Mask(ipc.Address.Mask))
		}
	}
	for _, ipc := range res.IPs {
		if ipc.Gateway == nil {
			continue
		}
		v4 := ipc.Address.IP.To4() != nil
		var def *types.Route
		for _, r := range res.Routes {
			if ones, _ := r.Dst.Mask.Size(); ones == 0 && (r.Dst.IP.To4() != nil) == v4 {
				def = r
				break
			}
		}
		switch {
		case def != nil && def.GW == nil:
			def.GW = ipc.Gateway
		case def != nil && n.Conf.IsDefaultGateway && !def.GW.Equal(ipc.Gateway):
			return types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("isDefaultGateway asks for a default route via %s, but IPAM returns one via %s", ipc.Gateway, def.GW),
				"drop isDefaultGateway or the default route of the ipam section")
		case def == nil && n.Conf.IsDefaultGateway:
			dst := net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
			if !v4 {
				dst = net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
			}
			res.Routes = append(res.Routes, &types.Route{Dst: dst, GW: ipc.Gateway})
		}
	}
	return nil
}

func (a *addition) saveState(context.Context) error {
	if a.prior != nil && a.replaced == nil {
		return nil
	}
	res := a.ipam
	if res == nil {
		res = &current.Result{CNIVersion: current.ImplementedSpecVersion}
	}
	raw, err := json.Marshal(res)
	if err != nil {
		return err
	}
	args := a.c.args
	err = a.store.Save(store.Record{
		ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns,
		HostVeth: a.hostVethName(), Subnet: a.slice,
		Table: a.choice.Table, Priority: a.choice.Priority, Result: raw,
	})
	a.savedState = err == nil
	return err
}

func (a *addition) forgetState(context.Context) error {
	switch {
	case !a.savedState:
		return nil
	case a.prior != nil:
		return a.store.Save(*a.prior)
	}
	return a.store.Delete(a.c.args.ContainerID, a.c.args.IfName)
}

func (a *addition) configureAddresses(context.Context) error {
	var addrs []netip.Prefix
	if a.ipam != nil {
		addrs = resultPrefixes(a.ipam)
	}
	return podif.Configure(a.pod, a.podSysctl, a.podLink, podif.Settings{
		Marker:    podif.Marker(a.c.net.Conf.Name, a.c.args.ContainerID),
		Addresses: addrs,
		EnableDAD: a.c.net.Conf.EnableDad,
	})
}

func (a *addition) podSysctl(key, value string) error {
	return a.podNS.Do(func(ns.NetNS) error {
		_, err := sysctl.Sysctl(key, value)
		return err
	})
}

func (a *addition) ensureGateway(context.Context) error {
	n := a.c.net
	// Every pod after a network's first on the node finds its gateways in
	// place: nothing to check or add then, and no lock. (A gateway is only
	// taken back by the rollback of the ADD that added it, and only while
	// no port is on the bridge; this pod's veth already is.)
	missing, err := bridge.MissingGateways(a.br, gatewayNets(a.ipam))
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return ip.EnableForward(a.ipam.IPs)
	}
	unlock, err := a.lockBridge()
	if err != nil {
		return err
	}
	defer unlock()
	if missing, err = bridge.MissingGateways(a.br, missing); err != nil {
		return err
	}
	var subnets []netip.Prefix
	for _, g := range missing {
		subnets = append(subnets, prefixOf(*g).Masked())
	}
	if err := a.checkOverlap(subnets); err != nil {
		return err
	}
	a.addedGateways, err = bridge.EnsureGateways(a.br, missing, n.Conf.ForceAddress)
	var conflict *bridge.AddressConflictError
	if errors.As(err, &conflict) {
		return types.NewError(types.ErrInvalidNetworkConfig, conflict.Error(), "")
	}
	if err != nil {
		return err
	}
	return ip.EnableForward(a.ipam.IPs)
}

// removeGateway takes back the gateway addresses this ADD put on the bridge,
// unless another pod's port is there to use them.
func (a *addition) removeGateway(context.Context) error {
	if len(a.addedGateways) == 0 {
		return nil
	}
	unlock, err := a.lockBridge()
	if err != nil {
		return err
	}
	defer unlock()
	busy, err := bridge.HasPorts(a.br, a.hostVethName())
	if err != nil || busy {
		return err
	}
	return bridge.RemoveGateways(a.br, a.addedGateways)
}

func (a *addition) attachment() rules.Attachment {
	return attachmentOf(a.c.net, a.c.args.IfName, a.podLink.Attrs().Index, a.ipam, a.choice)
}

func (a *addition) applyRoutes(context.Context) error {
	a.plan = rules.BuildPlan(a.attachment())
	if a.replaced != nil {
		if err := rules.RemoveRoutes(a.pod, *a.replaced); err != nil {
			return err
		}
	}
	err := rules.ApplyRoutes(a.pod, a.plan)
	var conflict *rules.MainRouteConflict
	if errors.As(err, &conflict) {
		return a.defaultRouteTaken(conflict.Existing.Gw, conflict.ExistingLink)
	}
	return err
}

// defaultRouteTaken is the refusal of a second isDefaultGateway in a pod,
// naming the interface and network that hold main's default route.
func (a *addition) defaultRouteTaken(gw net.IP, holder netlink.Link) error {
	route := "a default route"
	if gw != nil {
		route += " via " + gw.String()
	}
	if holder != nil {
		route += " on interface " + holder.Attrs().Name
		if network, ok := podif.NetworkOf(holder.Attrs().Alias); ok {
			route += " (network " + network + ")"
		}
	}
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("the pod's main table already has %s; isDefaultGateway of network %q would replace it", route, a.c.net.Conf.Name),
		"set isDefaultGateway on one network of the pod only (Multus's default-route selection changes main after the fact)")
}

// checkDefaultRoute refuses isDefaultGateway before anything is changed when
// the pod's main table already has a default route of a family this network
// will use, on another interface. Families unknown before IPAM (dhcp...) are
// caught when the route is added, and rolled back.
func (a *addition) checkDefaultRoute() error {
	n := a.c.net
	if !n.Conf.IsDefaultGateway || !n.Layer3 || a.prior != nil {
		return nil
	}
	v4, v6, known := n.Families()
	if !known {
		return nil
	}
	for _, fam := range []struct {
		use    bool
		family int
	}{{v4, netlink.FAMILY_V4}, {v6, netlink.FAMILY_V6}} {
		if !fam.use {
			continue
		}
		routes, err := a.pod.RouteListFiltered(fam.family, &netlink.Route{Table: rules.MainTable}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if ones, _ := r.Dst.Mask.Size(); r.Dst != nil && ones != 0 {
				continue
			}
			holder, _ := a.pod.LinkByIndex(r.LinkIndex)
			if holder != nil && holder.Attrs().Name == a.c.args.IfName {
				continue
			}
			return a.defaultRouteTaken(r.Gw, holder)
		}
	}
	return nil
}

func (a *addition) removeRoutes(context.Context) error {
	if a.prior != nil {
		return nil
	}
	return rules.RemoveRoutes(a.pod, a.plan)
}

func (a *addition) applyRules(context.Context) error {
	if a.replaced != nil {
		if err := rules.RemoveRules(a.pod, *a.replaced); err != nil {
			return err
		}
	}
	return rules.ApplyRules(a.pod, a.plan)
}

func (a *addition) removeRules(context.Context) error {
	if a.prior != nil {
		return nil
	}
	return rules.RemoveRules(a.pod, a.plan)
}

func (a *addition) ensureMasquerade(ctx context.Context) error {
	n := a.c.net
	unlock, err := bridge.NetworkLock(n.RuntimeDir(), n.Conf.Name)
	if err != nil {
		return err
	}
	defer unlock()
	plan := masq.Plan(subnetsOf(a.ipam), n.Pool)
	// Under the lock, so a DEL of the network's last other attachment
	// cannot remove the rules between this look and the pod's use of them.
	if n.MasqMode != "iptables" && masq.Present(n.Conf.Name, plan) {
		return nil
	}
	backend, err := a.p.opts.Masquerade(n.MasqMode)
	if err != nil {
		return err
	}
	a.masq = backend
	a.masqChanged, err = backend.Ensure(ctx, n.Conf.Name, plan)
	return err
}

// removeMasquerade takes the network's masquerade state back only when this
// ADD created it and no other attachment of the network is on the node; the
// network lock orders this against another ADD's set-up.
func (a *addition) removeMasquerade(ctx context.Context) error {
	if !a.masqChanged {
		return nil
	}
	n := a.c.net
	unlock, err := bridge.NetworkLock(n.RuntimeDir(), n.Conf.Name)
	if err != nil {
		return err
	}
	defer unlock()
	others, err := a.store.List()
	if err != nil {
		return err
	}
	for _, r := range others {
		if r.ContainerID != a.c.args.ContainerID || r.IfName != a.c.args.IfName {
			return nil
		}
	}
	return a.masq.Remove(ctx, n.Conf.Name)
}

func (a *addition) buildResult(context.Context) error {
	args := a.c.args
	hostAttrs := a.host.Attrs()
	podAttrs := a.podLink.Attrs()
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: a.br.Name, Mac: a.br.HardwareAddr.String()},
			{Name: hostAttrs.Name, Mac: hostAttrs.HardwareAddr.String()},
			{Name: args.IfName, Mac: podAttrs.HardwareAddr.String(), Mtu: podAttrs.MTU, Sandbox: args.Netns},
		},
		DNS: a.c.net.Conf.DNS,
	}
	if a.ipam != nil {
		for _, ipc := range a.ipam.IPs {
			ipc.Interface = current.Int(2)
		}
		res.IPs = a.ipam.IPs
		res.Routes = resultRoutes(a.ipam.Routes, a.choice)
		if res.DNS.IsEmpty() {
			res.DNS = a.ipam.DNS
		}
	}
	a.result = res
	return nil
}

// resultRoutes reports routes where they live: a policy-routed attachment's
// routes carry their table (CNI 1.1 "table"; older versions drop the field).
func resultRoutes(routes []*types.Route, c rules.Choice) []*types.Route {
	if c.Table == 0 || c.Table == rules.MainTable {
		return routes
	}
	out := make([]*types.Route, 0, len(routes))
	for _, r := range routes {
		rc := *r
		rc.Table = current.Int(c.Table)
		out = append(out, &rc)
	}
	return out
}

func (a *addition) addressList() []string {
	var out []string
	if a.ipam != nil {
		for _, p := range resultPrefixes(a.ipam) {
			out = append(out, p.String())
		}
	}
	return out
}
