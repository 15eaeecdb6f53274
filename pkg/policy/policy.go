// Package policy is the node administrator's say over what a
// NetworkAttachmentDefinition may ask multi-bridge to do. NADs are written by
// namespace users; the plugin runs as root on every node. The policy file
// (DefaultPath, JSON) narrows bridge names, subnets, IPAM types, tables,
// preferences, masquerading and the directories a configuration may name.
// Without a file the defaults apply: any valid bridge name, subnet, IPAM type,
// table and preference, masquerading allowed, and files only under
// DefaultDirectories.
//
// Parsing and checking are pure; Load only reads the file.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
)

// DefaultPath is where the node's policy lives.
const DefaultPath = "/etc/cni/multi-bridge/policy.json"

// PathEnv overrides DefaultPath for the plugin process (a node with another
// layout, tests). Only the runtime's environment sets it; nothing a NAD
// writes reaches the plugin's environment.
const PathEnv = "MULTI_BRIDGE_POLICY_FILE"

// DefaultDirectories are where a configuration's logFile, dataDir,
// runtimeDir and ipam.dataDir may point when the policy does not say:
// multi-bridge's own places and host-local's default, never a directory
// other programs keep files in (a log appended to /run/nologin, or state
// written over another plugin's, would hurt the node).
func DefaultDirectories() []string {
	return []string{
		"/var/lib/cni/multi-bridge", "/var/lib/cni/networks", // state: multi-bridge's, host-local's
		"/run/multi-bridge", "/var/run/multi-bridge", // locks and node slices
		"/var/log/multi-bridge", // logs
	}
}

// Range is an inclusive range of integers.
type Range struct {
	Min int64 `json:"min"`
	Max int64 `json:"max"`
}

func (r Range) contains(v int64) bool { return v >= r.Min && v <= r.Max }

func (r Range) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// Policy is the node policy. An absent field (or null) means "no
// restriction beyond the defaults"; an empty list allows nothing.
type Policy struct {
	// AllowedBridges are shell patterns (path.Match) for "bridge".
	AllowedBridges []string `json:"allowedBridges,omitempty"`
	// AllowedSubnets must each contain every subnet, range, static address,
	// requested IP and pool a configuration declares, and every address and
	// gateway its IPAM plugin returns.
	AllowedSubnets []string `json:"allowedSubnets,omitempty"`
	// AllowedIPAMTypes are the ipam.type values that may be executed.
	AllowedIPAMTypes []string `json:"allowedIPAMTypes,omitempty"`
	// Tables and Priorities bound the table and rule preference of an
	// attachment, whether configured or chosen automatically (table 0, no
	// policy routing, must be in range too).
	Tables     *Range `json:"tables,omitempty"`
	Priorities *Range `json:"priorities,omitempty"`
	// AllowIPMasq false refuses "ipMasq": true.
	AllowIPMasq *bool `json:"allowIPMasq,omitempty"`
	// AllowedDirectories replace DefaultDirectories.
	AllowedDirectories []string `json:"allowedDirectories,omitempty"`

	source  string
	subnets []netip.Prefix
}

// Default is the policy of a node without a policy file.
func Default() *Policy {
	return &Policy{source: "the default node policy"}
}

// Source names where the policy came from, for error messages.
func (p *Policy) Source() string { return p.source }

// Load reads the policy at path; a missing file is the default policy.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Default(), nil
	}
	if err != nil {
		return nil, broken(path, err.Error())
	}
	return Parse(data, path)
}

// Parse validates a policy document. Unknown fields are refused: a typo in
// a restriction must not silently lift it.
func Parse(data []byte, source string) (*Policy, error) {
	p := &Policy{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		return nil, broken(source, err.Error())
	}
	if dec.More() {
		return nil, broken(source, "data after the JSON object")
	}
	p.source = source
	for _, pattern := range p.AllowedBridges {
		if _, err := path.Match(pattern, ""); err != nil {
			return nil, broken(source, fmt.Sprintf("allowedBridges: bad pattern %q", pattern))
		}
	}
	for _, s := range p.AllowedSubnets {
		prefix, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, broken(source, fmt.Sprintf("allowedSubnets: %q is not a subnet", s))
		}
		p.subnets = append(p.subnets, prefix.Masked())
	}
	for name, r := range map[string]*Range{"tables": p.Tables, "priorities": p.Priorities} {
		if r != nil && r.Min > r.Max {
			return nil, broken(source, fmt.Sprintf("%s: min %d is above max %d", name, r.Min, r.Max))
		}
	}
	for _, d := range p.AllowedDirectories {
		if !filepath.IsAbs(d) || filepath.Clean(d) != d {
			return nil, broken(source, fmt.Sprintf("allowedDirectories: %q is not a clean absolute path", d))
		}
	}
	return p, nil
}

// broken is the error of an unusable policy file: every ADD is refused
// until the administrator fixes it, rather than running unrestricted.
func broken(source, why string) error {
	return types.NewError(types.ErrInternal,
		fmt.Sprintf("node policy %s is unusable: %s", source, why),
		"the node's administrator must fix or remove the file; multi-bridge refuses to add attachments until then")
}

// refused is the error of a configuration outside the policy: the field and
// value, the rule and what it allows.
func (p *Policy) refused(field string, value any, rule string, allows any) error {
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("%s %v is not allowed by rule %q of %s, which allows %v", field, value, rule, p.source, allows),
		"use a value the node policy allows, or ask the cluster's administrator to extend the policy")
}

// CheckPaths applies the directory rule. It holds for every verb: DEL and
// GC write logs, locks and state too.
func (p *Policy) CheckPaths(n *config.Network) error {
	dirs, rule := p.AllowedDirectories, "allowedDirectories"
	if dirs == nil {
		dirs = DefaultDirectories()
	}
	for _, f := range n.PathFields() {
		if !under(f.Value, dirs) {
			return p.refused(f.Field, fmt.Sprintf("%q", f.Value), rule, dirs)
		}
	}
	return nil
}

// CheckResolvedPaths applies the directory rule to where the paths lead
// once symbolic links are followed (for the part of each path that exists):
// a link inside an allowed directory must not lead out of it.
func (p *Policy) CheckResolvedPaths(n *config.Network) error {
	dirs := p.AllowedDirectories
	if dirs == nil {
		dirs = DefaultDirectories()
	}
	var resolvedDirs []string
	for _, d := range dirs {
		resolvedDirs = append(resolvedDirs, d, resolveExisting(d))
	}
	for _, f := range n.PathFields() {
		if r := resolveExisting(f.Value); !under(r, resolvedDirs) {
			return p.refused(f.Field, fmt.Sprintf("%q (leading to %q)", f.Value, r), "allowedDirectories", dirs)
		}
	}
	return nil
}

// resolveExisting follows the symbolic links of the longest part of path
// that exists and appends the rest unchanged. A dangling link leads to its
// target, as a file created through it would.
func resolveExisting(path string) string {
	return resolveDepth(filepath.Clean(path), 0)
}

func resolveDepth(path string, depth int) string {
	rest := ""
	for dir := path; ; dir = filepath.Dir(dir) {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		if target, err := os.Readlink(dir); err == nil && depth < 40 {
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(dir), target)
			}
			return resolveDepth(filepath.Join(target, rest), depth+1)
		}
		if dir == filepath.Dir(dir) {
			return path
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}

// under reports whether path is dir or inside it, for one of dirs.
func under(p string, dirs []string) bool {
	p = filepath.Clean(p)
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// Check applies the rest of the policy to a configuration ADD is asked to
// set up.
func (p *Policy) Check(n *config.Network) error {
	if err := p.CheckPaths(n); err != nil {
		return err
	}
	if p.AllowedBridges != nil && !matchesAny(n.Bridge, p.AllowedBridges) {
		return p.refused(`"bridge"`, fmt.Sprintf("%q", n.Bridge), "allowedBridges", quoted(p.AllowedBridges))
	}
	if t := n.Conf.IPAM.Type; t != "" && p.AllowedIPAMTypes != nil && !slices.Contains(p.AllowedIPAMTypes, t) {
		return p.refused(`"ipam.type"`, fmt.Sprintf("%q", t), "allowedIPAMTypes", quoted(p.AllowedIPAMTypes))
	}
	if n.Conf.IPMasq && p.AllowIPMasq != nil && !*p.AllowIPMasq {
		return p.refused(`"ipMasq"`, true, "allowIPMasq", false)
	}
	for _, d := range n.DeclaredSubnets() {
		if err := p.checkPrefix(`"`+d.Field+`"`, d.Prefix); err != nil {
			return err
		}
	}
	switch n.Routing.Mode {
	case config.RoutingTable:
		if err := p.CheckTable(n.Routing.Table); err != nil {
			return err
		}
	case config.RoutingMain:
		if err := p.CheckTable(0); err != nil {
			return err
		}
	}
	if n.Routing.Priority != 0 {
		return p.CheckPriority(n.Routing.Priority)
	}
	return nil
}

// CheckTable applies the table range; ADD also calls it for a table it
// chose automatically.
func (p *Policy) CheckTable(table int) error {
	if p.Tables != nil && !p.Tables.contains(int64(table)) {
		return p.refused(`"table"`, table, "tables", p.Tables)
	}
	return nil
}

// CheckPriority applies the preference range.
func (p *Policy) CheckPriority(priority int) error {
	if p.Priorities != nil && !p.Priorities.contains(int64(priority)) {
		return p.refused(`"priority"`, priority, "priorities", p.Priorities)
	}
	return nil
}

// CheckAddresses applies allowedSubnets to what the IPAM plugin returned:
// an IPAM type that declares nothing in the configuration (dhcp...) is held
// to the policy here.
func (p *Policy) CheckAddresses(ipamType string, addrs []netip.Prefix, gateways []netip.Addr) error {
	for _, a := range addrs {
		if err := p.checkPrefix(fmt.Sprintf("address from IPAM %q", ipamType), a.Masked()); err != nil {
			return err
		}
	}
	for _, g := range gateways {
		if err := p.checkPrefix(fmt.Sprintf("gateway from IPAM %q", ipamType), netip.PrefixFrom(g, g.BitLen())); err != nil {
			return err
		}
	}
	return nil
}

// Sanctions reports whether the administrator listed prefix (or a subnet
// containing it) in allowedSubnets: the way to allow a gateway subnet the
// node also routes through another interface.
func (p *Policy) Sanctions(prefix netip.Prefix) bool {
	return p.AllowedSubnets != nil && p.checkPrefix("", prefix) == nil
}

// CheckPool applies allowedSubnets to a network's cluster-wide pool, for
// the node agent: it routes every other node's slices of a pool, so a NAD
// naming a pool outside the policy must not get routes on this node.
func (p *Policy) CheckPool(pool netip.Prefix) error {
	return p.checkPrefix(`"nodeSubnets.pool"`, pool)
}

func (p *Policy) checkPrefix(what string, prefix netip.Prefix) error {
	if p.AllowedSubnets == nil {
		return nil
	}
	for _, allowed := range p.subnets {
		if allowed.Bits() <= prefix.Bits() && allowed.Contains(prefix.Addr()) {
			return nil
		}
	}
	return p.refused(what, prefix, "allowedSubnets", p.AllowedSubnets)
}

func matchesAny(name string, patterns []string) bool {
	for _, pattern := range patterns {
		if ok, _ := path.Match(pattern, name); ok {
			return true
		}
	}
	return false
}

func quoted(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
