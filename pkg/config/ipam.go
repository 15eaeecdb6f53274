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
