package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// IPAMConf is the configuration handed to the IPAM plugin: the network
// configuration as received, with the requested static addresses from every
// source merged into runtimeConfig.ips (and removed from args.cni.ips so no
// plugin sees an address twice), and, when the network slices a pool per
// node, this node's slice as the IPAM subnet.
func (n *Network) IPAMConf(nodeSlice *netip.Prefix) ([]byte, error) {
	out := make(map[string]json.RawMessage, len(n.RawConf)+1)
	for k, v := range n.RawConf {
		out[k] = v
	}
	if len(n.IPs) > 0 {
		if err := setNested(out, "runtimeConfig", "ips", n.IPs); err != nil {
			return nil, err
		}
		if err := deleteNested(out, "args", "cni", "ips"); err != nil {
			return nil, err
		}
	}
	if nodeSlice != nil {
		if err := setNested(out, "ipam", "subnet", nodeSlice.String()); err != nil {
			return nil, err
		}
	}
	return json.Marshal(out)
}

// setNested sets obj[section][key] = value, creating the section.
func setNested(obj map[string]json.RawMessage, section, key string, value any) error {
	inner := map[string]json.RawMessage{}
	if raw, ok := obj[section]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &inner); err != nil {
			return invalid(fmt.Sprintf("%q", section), string(raw), "not a JSON object", "fix the network configuration")
		}
	}
	v, err := json.Marshal(value)
	if err != nil {
		return err
	}
	inner[key] = v
	b, err := json.Marshal(inner)
	if err != nil {
		return err
	}
	obj[section] = b
	return nil
}

// deleteNested removes obj[path[0]][path[1]]...[last] if present.
func deleteNested(obj map[string]json.RawMessage, path ...string) error {
	raw, ok := obj[path[0]]
	if !ok || string(raw) == "null" {
		return nil
	}
	if len(path) == 1 {
		delete(obj, path[0])
		return nil
	}
	inner := map[string]json.RawMessage{}
	if err := json.Unmarshal(raw, &inner); err != nil {
		return nil // not an object: nothing of ours to remove
	}
	if err := deleteNested(inner, path[1:]...); err != nil {
		return err
	}
	b, err := json.Marshal(inner)
	if err != nil {
		return err
	}
	obj[path[0]] = b
	return nil
}

// Families are the address families the attachment will get, when the
// configuration says (host-local's subnet or ranges, static's addresses,
// requested addresses, the nodeSubnets pool); known is false otherwise (dhcp,
// whereabouts...). Decisions that need it before IPAM runs use it.
func (n *Network) Families() (v4, v6, known bool) {
	for _, d := range n.DeclaredSubnets() {
		v4, v6, known = v4 || d.Prefix.Addr().Is4(), v6 || d.Prefix.Addr().Is6(), true
	}
	return v4, v6, known
}

// Declared is a subnet or address the configuration claims for the
// attachment, with the field it came from.
type Declared struct {
	Field  string
	Prefix netip.Prefix
}

// hostLocalRange is one range of host-local's configuration.
type hostLocalRange struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart"`
	RangeEnd   string `json:"rangeEnd"`
	Gateway    string `json:"gateway"`
}

// ipamAddresses is the part of an ipam section multi-bridge reads: the
// host-local and static layouts.
type ipamAddresses struct {
	hostLocalRange
	Ranges    [][]hostLocalRange `json:"ranges"`
	Addresses []struct {
		Address string `json:"address"`
		Gateway string `json:"gateway"`
	} `json:"addresses"`
}

// validateIPAMSubnets checks what the configuration says about addresses
// before any IPAM plugin runs: subnets parse, range bounds and gateways lie
// inside their subnet, a range does not run backwards. The IPAM plugin would
// refuse most of it too, but only after the veth exists, and a gateway
// outside the subnet it would accept.
func validateIPAMSubnets(n *Network, _ Args) error {
	_, err := n.declared()
	return err
}

// DeclaredSubnets are the subnets and addresses the configuration claims:
// host-local's subnet and ranges, static's addresses, requested static IPs
// (as single addresses) and the nodeSubnets pool. An IPAM plugin of another
// kind (dhcp, whereabouts) declares nothing here; its result is checked
// after it runs.
func (n *Network) DeclaredSubnets() []Declared {
	d, _ := n.declared()
	return d
}

func (n *Network) declared() ([]Declared, error) {
	var out []Declared
	raw := n.RawConf["ipam"]
	var ipam ipamAddresses
	if n.Layer3 && len(raw) > 0 {
		if err := json.Unmarshal(raw, &ipam); err != nil {
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) {
				return nil, types.NewError(types.ErrDecodingFailure,
					fmt.Sprintf("invalid \"ipam.%s\": got a JSON %s, want %s", strings.TrimPrefix(typeErr.Field, "hostLocalRange."), typeErr.Value, jsonKind(typeErr.Type.Kind().String())),
					"fix the type of that field in the ipam section")
			}
			return nil, decodeError(err)
		}
	}
	check := func(field string, r hostLocalRange) error {
		if r.Subnet == "" {
			for _, f := range []struct{ name, value string }{{"rangeStart", r.RangeStart}, {"rangeEnd", r.RangeEnd}, {"gateway", r.Gateway}} {
				if f.value != "" && n.Pool == nil {
					return invalid(`"`+field+f.name+`"`, fmt.Sprintf("%q", f.value), "given without a subnet", `add "subnet" next to it`)
				}
			}
			return nil
		}
		subnet, err := netip.ParsePrefix(r.Subnet)
		if err != nil {
			return invalid(`"`+field+`subnet"`, fmt.Sprintf("%q", r.Subnet), "not a subnet", `use CIDR form, e.g. "10.240.10.0/24"`)
		}
		out = append(out, Declared{Field: field + "subnet", Prefix: subnet.Masked()})
		bounds := map[string]netip.Addr{}
		for _, f := range []struct{ name, value string }{{"rangeStart", r.RangeStart}, {"rangeEnd", r.RangeEnd}, {"gateway", r.Gateway}} {
			if f.value == "" {
				continue
			}
			a, err := netip.ParseAddr(f.value)
			if err != nil {
				return invalid(`"`+field+f.name+`"`, fmt.Sprintf("%q", f.value), "not an IP address", `use a plain address, e.g. "10.240.10.1"`)
			}
			if !subnet.Contains(a) {
				return invalid(`"`+field+f.name+`"`, fmt.Sprintf("%q", f.value), fmt.Sprintf("outside the subnet %s", subnet.Masked()),
					"give an address inside the subnet, or fix the subnet")
			}
			bounds[f.name] = a
		}
		if s, e := bounds["rangeStart"], bounds["rangeEnd"]; s.IsValid() && e.IsValid() && e.Less(s) {
			return invalid(`"`+field+`rangeEnd"`, fmt.Sprintf("%q", r.RangeEnd), fmt.Sprintf("comes before rangeStart %s", s), "swap them")
		}
		return nil
	}
	if err := check("ipam.", ipam.hostLocalRange); err != nil {
		return nil, err
	}
	for i, set := range ipam.Ranges {
		for j, r := range set {
			if err := check(fmt.Sprintf("ipam.ranges[%d][%d].", i, j), r); err != nil {
				return nil, err
			}
		}
	}
	for i, a := range ipam.Addresses {
		field := fmt.Sprintf("ipam.addresses[%d].", i)
		p, err := netip.ParsePrefix(a.Address)
		if err != nil {
			return nil, invalid(`"`+field+`address"`, fmt.Sprintf("%q", a.Address), "not an address with its prefix length", `use CIDR form, e.g. "10.240.10.5/24"`)
		}
		out = append(out, Declared{Field: field + "address", Prefix: p.Masked()})
		if a.Gateway == "" {
			continue
		}
		gw, err := netip.ParseAddr(a.Gateway)
		if err != nil || !p.Masked().Contains(gw) {
			return nil, invalid(`"`+field+`gateway"`, fmt.Sprintf("%q", a.Gateway), fmt.Sprintf("not an address inside %s", p.Masked()),
				"give the gateway of that address's subnet")
		}
	}
	for _, ip := range n.IPs {
		if a, err := parseAddr(ip); err == nil {
			out = append(out, Declared{Field: "static IP request", Prefix: netip.PrefixFrom(a, a.BitLen())})
		}
	}
	if n.Pool != nil {
		out = append(out, Declared{Field: "nodeSubnets.pool", Prefix: *n.Pool})
	}
	return out, nil
}
