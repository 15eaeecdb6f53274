package agent

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
	"github.com/multi-bridge-cni/multi-bridge/pkg/nodesubnet"
)

// PluginType is the CNI type whose configurations the agent serves.
const PluginType = "multi-bridge"

// Network is a network whose configuration slices a pool per node. Its
// name is the cluster-wide key: the name of the leases, of the node-local
// file the plugin reads, and of the routes' owner.
type Network struct {
	Name            string
	Pool            netip.Prefix
	Size            int
	FromNodePodCIDR bool
	// Source says where the definition came from: "nad:<ns>/<name>",
	// "file:<path>" (the CNI conf dir) or "--cni-config".
	Source string
	// Created is the NAD's creationTimestamp; zero for the node's files.
	Created time.Time
}

// FromFile reports whether the definition is one of the node's own files
// (the CNI conf dir or --cni-config) rather than a NAD.
func (n Network) FromFile() bool { return !strings.HasPrefix(n.Source, "nad:") }

// Same reports whether two definitions slice the same way.
func (n Network) Same(o Network) bool {
	return n.Name == o.Name && n.Pool == o.Pool && n.Size == o.Size && n.FromNodePodCIDR == o.FromNodePodCIDR
}

func (n Network) String() string {
	if n.FromNodePodCIDR {
		return fmt.Sprintf("%s (pool %s, slices from Node podCIDRs, from %s)", n.Name, n.Pool, n.Source)
	}
	return fmt.Sprintf("%s (pool %s, /%d per node, from %s)", n.Name, n.Pool, n.Size, n.Source)
}

// ParseConfig returns the networks of a CNI configuration (a single
// configuration or a conflist, as in a NetworkAttachmentDefinition's
// spec.config or a file of the CNI conf dir) whose multi-bridge plugin has
// "nodeSubnets". Each multi-bridge plugin is validated as the plugin would
// validate it at ADD, so the agent never leases for a configuration the
// plugin refuses.
func ParseConfig(raw []byte, source string) ([]Network, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("%s: CNI configuration is not a JSON object: %w", source, err)
	}
	if _, isList := top["plugins"]; !isList {
		n, err := parsePlugin(raw, source)
		if err != nil || n == nil {
			return nil, err
		}
		return []Network{*n}, nil
	}
	var list struct {
		Name       string            `json:"name"`
		CNIVersion string            `json:"cniVersion"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("%s: CNI conflist: %w", source, err)
	}
	var out []Network
	for i, p := range list.Plugins {
		var plugin map[string]json.RawMessage
		if err := json.Unmarshal(p, &plugin); err != nil {
			return nil, fmt.Errorf("%s: plugins[%d] is not a JSON object: %w", source, i, err)
		}
		// libcni hands each plugin of a list the list's name and version.
		plugin["name"], _ = json.Marshal(list.Name)
		if _, ok := plugin["cniVersion"]; !ok {
			plugin["cniVersion"], _ = json.Marshal(list.CNIVersion)
		}
		b, _ := json.Marshal(plugin)
		n, err := parsePlugin(b, fmt.Sprintf("%s plugins[%d]", source, i))
		if err != nil {
			return nil, err
		}
		if n != nil {
			n.Source = source
			out = append(out, *n)
		}
	}
	return out, nil
}

func parsePlugin(raw []byte, source string) (*Network, error) {
	var head struct {
		Type        string          `json:"type"`
		Name        string          `json:"name"`
		NodeSubnets json.RawMessage `json:"nodeSubnets"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if head.Type != PluginType {
		return nil, nil
	}
	if head.Name == "" {
		if len(head.NodeSubnets) > 0 && string(head.NodeSubnets) != "null" {
			return nil, fmt.Errorf(`%s: a configuration with "nodeSubnets" needs a "name": it names the network's leases and the file the plugin reads`, source)
		}
		// Multus names it after its NAD: check the rest as the plugin
		// will see it.
		raw = withName(raw, "unnamed")
	}
	n, err := config.Load(raw, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if n.Conf.NodeSubnets == nil {
		return nil, nil
	}
	return &Network{
		Name: head.Name, Pool: *n.Pool, Size: n.Conf.NodeSubnets.Size,
		FromNodePodCIDR: n.Conf.NodeSubnets.FromNodePodCIDR, Source: source,
	}, nil
}

// withName is the configuration raw (a JSON object) named name.
func withName(raw []byte, name string) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	m["name"], _ = json.Marshal(name)
	b, _ := json.Marshal(m)
	return b
}

func describeSlicing(n Network) string {
	if n.FromNodePodCIDR {
		return fmt.Sprintf("pool %s from Node podCIDRs", n.Pool)
	}
	return fmt.Sprintf("pool %s in /%d slices", n.Pool, n.Size)
}

// ReadConfDir reads the CNI configuration files of dir in the order libcni
// uses (lexical, .conf, .conflist and .json), one Definition each (an
// unreadable or invalid file is one with Err). A missing dir has none; err
// is for a dir that cannot be read.
func ReadConfDir(dir string) ([]Definition, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading CNI conf dir: %w", err)
	}
	var files []string
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); !e.IsDir() && slices.Contains([]string{".conf", ".conflist", ".json"}, ext) {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(files)
	var defs []Definition
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			defs = append(defs, Definition{Source: "file:" + f, Err: err})
			continue
		}
		defs = append(defs, fileDefinition(raw, "file:"+f))
	}
	return defs, nil
}

// ReleaseResponsible reports whether node self releases the leases of
// deleted node dead: the first live node after dead in name order (wrapping
// around). One agent per deleted node does it, instead of every agent of
// the cluster racing to delete the same objects; live holds the Node names
// the agent sees, itself included.
func ReleaseResponsible(dead string, live []string, self string) bool {
	if len(live) == 0 {
		return false
	}
	sorted := slices.Clone(live)
	sort.Strings(sorted)
	i := sort.SearchStrings(sorted, dead)
	for i < len(sorted) && sorted[i] == dead {
		i++ // dead is still in the list: the cache lags
	}
	if i == len(sorted) {
		i = 0
	}
	return sorted[i] == self
}

// podCIDRIn returns the Node podCIDR of pool's family inside pool.
func podCIDRIn(podCIDRs []string, pool netip.Prefix) (netip.Prefix, bool) {
	for _, c := range podCIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil || p.Addr().Is4() != pool.Addr().Is4() {
			continue
		}
		if p = p.Masked(); p.Bits() >= pool.Bits() && pool.Contains(p.Addr()) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// PreferredSlice is the slice a node should lease again when it holds no
// lease of n: the one in its node subnet file (have, nil when none), if it
// is a slice of n's pool and size. The node's pods still use its addresses;
// taking another slice would leave them on addresses the next node may get.
func PreferredSlice(have *nodesubnet.Lease, n Network) netip.Prefix {
	if have == nil || n.FromNodePodCIDR || have.Network != n.Name || have.Pool != n.Pool || have.Subnet.Bits() != n.Size {
		return netip.Prefix{}
	}
	return have.Subnet
}
