package config

import (
	"encoding/json"
	"fmt"
	"net/netip"
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
	add := func(s string) {
		if a, err := parseAddr(s); err == nil {
			v4, v6, known = v4 || a.Is4(), v6 || a.Is6(), true
		}
	}
	for _, ip := range n.IPs {
		add(ip)
	}
	if n.Pool != nil {
		add(n.Pool.String())
	}
	var ipam struct {
		Subnet string `json:"subnet"`
		Ranges [][]struct {
			Subnet string `json:"subnet"`
		} `json:"ranges"`
		Addresses []struct {
			Address string `json:"address"`
		} `json:"addresses"`
	}
	_ = json.Unmarshal(n.RawConf["ipam"], &ipam)
	add(ipam.Subnet)
	for _, set := range ipam.Ranges {
		for _, r := range set {
			add(r.Subnet)
		}
	}
	for _, a := range ipam.Addresses {
		add(a.Address)
	}
	return v4, v6, known
}
