package plugin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
	"github.com/multi-bridge-cni/multi-bridge/pkg/rules"
	"github.com/multi-bridge-cni/multi-bridge/pkg/store"
)

// attachmentOf is the input of rules.BuildPlan for an attachment whose
// addresses and routes are res.
func attachmentOf(n *config.Network, ifName string, linkIndex int, res *current.Result, c rules.Choice) rules.Attachment {
	att := rules.Attachment{
		IfName:        ifName,
		LinkIndex:     linkIndex,
		Table:         c.Table,
		Priority:      c.Priority,
		DefaultInMain: n.Conf.IsDefaultGateway,
	}
	if res == nil {
		return att
	}
	for _, ipc := range res.IPs {
		a := rules.Address{Prefix: prefixOf(ipc.Address)}
		if gw, ok := netip.AddrFromSlice(ipc.Gateway); ok {
			a.Gateway = gw.Unmap()
		}
		att.Addresses = append(att.Addresses, a)
	}
	att.Routes = res.Routes
	return att
}

func prefixOf(n net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// resultPrefixes are the attachment's addresses with their subnet length.
func resultPrefixes(res *current.Result) []netip.Prefix {
	var out []netip.Prefix
	for _, ipc := range res.IPs {
		out = append(out, prefixOf(ipc.Address))
	}
	return out
}

// resultAddrs are the attachment's bare addresses.
func resultAddrs(res *current.Result) []netip.Addr {
	var out []netip.Addr
	for _, p := range resultPrefixes(res) {
		out = append(out, p.Addr())
	}
	return out
}

// subnetsOf are the distinct subnets of the attachment's addresses.
func subnetsOf(res *current.Result) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range resultPrefixes(res) {
		if m := p.Masked(); !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// gatewayNets are the gateway addresses to put on the bridge, each with its
// subnet's length so the node has the connected route to the pods.
func gatewayNets(res *current.Result) []*net.IPNet {
	var out []*net.IPNet
	for _, ipc := range res.IPs {
		if ipc.Gateway == nil {
			continue
		}
		gw := &net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask}
		if !slices.ContainsFunc(out, func(o *net.IPNet) bool { return o.String() == gw.String() }) {
			out = append(out, gw)
		}
	}
	return out
}

func recordResult(r *store.Record) (*current.Result, error) {
	if len(r.Result) == 0 {
		return &current.Result{CNIVersion: current.ImplementedSpecVersion}, nil
	}
	var res current.Result
	if err := json.Unmarshal(r.Result, &res); err != nil {
		return nil, fmt.Errorf("state of %s/%s: %w", r.ContainerID, r.IfName, err)
	}
	return &res, nil
}

func recordAddrs(r *store.Record) []netip.Addr {
	if r == nil {
		return nil
	}
	res, err := recordResult(r)
	if err != nil {
		return nil
	}
	return resultAddrs(res)
}

// prevResultOf parses the prevResult libcni passed, if any.
func prevResultOf(n *config.Network) (*current.Result, error) {
	conf := n.Conf.PluginConf
	if err := version.ParsePrevResult(&conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	if conf.PrevResult == nil {
		return nil, nil
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot convert prevResult: "+err.Error(), "")
	}
	return res, nil
}
