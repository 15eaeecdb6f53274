package masq

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// ipt is the iptables fallback for nodes without nftables. Each network has
// a chain "MB-<hash>" in the nat table (iptables chain names are limited to 28
// characters, so the network name lives in the comment of the POSTROUTING
// jump). Within the chain, destinations to keep return early and the rest is
// masqueraded.
type iptBackend struct {
	v4, v6 *iptables.IPTables
}

func newIPTables() (Backend, error) {
	v4, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, err
	}
	v6, err := iptables.NewWithProtocol(iptables.ProtocolIPv6)
	if err != nil {
		return nil, err
	}
	return &iptBackend{v4: v4, v6: v6}, nil
}

func (b *iptBackend) Name() string { return "iptables" }

const (
	natTable    = "nat"
	postrouting = "POSTROUTING"
	jumpComment = "multi-bridge network "
)

func iptChain(network string) string {
	sum := sha256.Sum256([]byte(network))
	return "MB-" + strings.ToUpper(hex.EncodeToString(sum[:8]))
}

func (b *iptBackend) families(rules []Rule) map[*iptables.IPTables][]Rule {
	out := map[*iptables.IPTables][]Rule{}
	for _, r := range rules {
		t := b.v4
		if r.Subnet.Addr().Is6() {
			t = b.v6
		}
		out[t] = append(out[t], r)
	}
	return out
}

var commentRE = regexp.MustCompile(`--comment "?([^"]*)"?`)

// current reads back the rules of a network's chain from their comments.
func current(t *iptables.IPTables, chain string) ([]Rule, bool, error) {
	exists, err := t.ChainExists(natTable, chain)
	if err != nil || !exists {
		return nil, false, err
	}
	lines, err := t.List(natTable, chain)
	if err != nil {
		return nil, true, err
	}
	var rules []Rule
	for _, l := range lines {
		m := commentRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		r, ok := parseDescribe(m[1])
		if ok && !slices.ContainsFunc(rules, func(o Rule) bool { return o.Key() == r.Key() }) {
			rules = append(rules, r)
		}
	}
	return rules, true, nil
}

func parseDescribe(s string) (Rule, bool) {
	subnet, ex, ok := strings.Cut(s, " except ")
	if !ok {
		return Rule{}, false
	}
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return Rule{}, false
	}
	r := Rule{Subnet: p}
	for _, e := range strings.Split(ex, ",") {
		q, err := netip.ParsePrefix(e)
		if err != nil {
			return Rule{}, false
		}
		r.Exclude = append(r.Exclude, q)
	}
	return r, true
}

// missingSpecs lists the iptables rules of r that are not in the chain: a
// rule's comment alone does not say its MASQUERADE is still there.
func missingSpecs(t *iptables.IPTables, chain string, r Rule) ([]string, error) {
	var missing []string
	for _, spec := range ruleSpecs(r) {
		ok, err := t.Exists(natTable, chain, spec...)
		if err != nil {
			return nil, err
		}
		if !ok {
			missing = append(missing, strings.Join(spec, " "))
		}
	}
	return missing, nil
}

// foreignRules counts rules in the chain beyond the network's own (specs
// of want): a rule inserted by hand (an early ACCEPT) would stop the
// masquerade though every rule of ours is there.
func foreignRules(t *iptables.IPTables, chain string, want []Rule) (int, error) {
	lines, err := t.List(natTable, chain)
	if err != nil {
		return 0, err
	}
	ours := 0
	for _, r := range want {
		ours += len(ruleSpecs(r))
	}
	// List's first line declares the chain (-N).
	return len(lines) - 1 - ours, nil
}

func ruleSpecs(r Rule) [][]string {
	comment := []string{"-m", "comment", "--comment", r.Describe()}
	var specs [][]string
	for _, e := range r.Exclude {
		specs = append(specs, append([]string{"-s", r.Subnet.String(), "-d", e.String()}, append(comment, "-j", "RETURN")...))
	}
	return append(specs, append([]string{"-s", r.Subnet.String()}, append(comment, "-j", "MASQUERADE")...))
}

// Ensure rebuilds the chain from the rules it holds plus the new ones. The
// caller holds the network's lock, which is what makes read-then-write safe.
func (b *iptBackend) Ensure(_ context.Context, network string, rules []Rule) (bool, error) {
	chain := iptChain(network)
	changed := false
	for t, want := range b.families(rules) {
		have, exists, err := current(t, chain)
		if err != nil {
			return changed, err
		}
		merged := slices.Clone(have)
		for _, r := range want {
			i := slices.IndexFunc(merged, func(o Rule) bool { return o.Key() == r.Key() })
			switch {
			case i < 0:
				merged = append(merged, r)
			case merged[i].Describe() != r.Describe():
				merged[i] = r
			}
		}
		intact := exists && slices.EqualFunc(have, merged, func(a, b Rule) bool { return a.Describe() == b.Describe() })
		for _, r := range merged {
			if !intact {
				break
			}
			missing, err := missingSpecs(t, chain, r)
			if err != nil {
				return changed, err
			}
			intact = len(missing) == 0
		}
		if intact {
			extra, err := foreignRules(t, chain, merged)
			if err != nil {
				return changed, err
			}
			intact = extra == 0
		}
		if intact {
			if err := t.AppendUnique(natTable, postrouting, "-m", "comment", "--comment", jumpComment+network, "-j", chain); err != nil {
				return changed, err
			}
			continue
		}
		if err := t.ClearChain(natTable, chain); err != nil { // creates it when absent
			return changed, err
		}
		for _, r := range merged {
			for _, spec := range ruleSpecs(r) {
				if err := t.Append(natTable, chain, spec...); err != nil {
					return true, err
				}
			}
		}
		if err := t.AppendUnique(natTable, postrouting, "-m", "comment", "--comment", jumpComment+network, "-j", chain); err != nil {
			return true, err
		}
		changed = true
	}
	return changed, nil
}

func (b *iptBackend) Verify(_ context.Context, network string, rules []Rule) error {
	chain := iptChain(network)
	var missing []string
	for t, want := range b.families(rules) {
		exists, err := t.ChainExists(natTable, chain)
		if err != nil {
			return err
		}
		if !exists {
			missing = append(missing, "chain "+chain)
			continue
		}
		jump, err := t.Exists(natTable, postrouting, "-m", "comment", "--comment", jumpComment+network, "-j", chain)
		if err != nil {
			return err
		}
		if !jump {
			missing = append(missing, fmt.Sprintf("jump from %s to %s", postrouting, chain))
		}
		for _, r := range want {
			specs, err := missingSpecs(t, chain, r)
			if err != nil {
				return err
			}
			for _, s := range specs {
				missing = append(missing, fmt.Sprintf("rule %q", s))
			}
		}
		if len(missing) == 0 {
			all, _, err := current(t, chain)
			if err != nil {
				return err
			}
			extra, err := foreignRules(t, chain, all)
			if err != nil {
				return err
			}
			if extra > 0 {
				missing = append(missing, fmt.Sprintf("only its own rules (%d foreign rule(s) found, which can stop the masquerade)", extra))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("masquerade state missing in iptables nat chain %s: %s", chain, strings.Join(missing, ", "))
	}
	return nil
}

func (b *iptBackend) Remove(_ context.Context, network string) error {
	chain := iptChain(network)
	var errs []error
	for _, t := range []*iptables.IPTables{b.v4, b.v6} {
		// iptables cannot even look for a jump to a chain that does not
		// exist, so the chain decides whether there is anything to remove.
		exists, err := t.ChainExists(natTable, chain)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !exists {
			continue
		}
		if err := t.DeleteIfExists(natTable, postrouting, "-m", "comment", "--comment", jumpComment+network, "-j", chain); err != nil {
			errs = append(errs, err)
		}
		if err := t.ClearAndDeleteChain(natTable, chain); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (b *iptBackend) Networks(_ context.Context) ([]string, error) {
	var nets []string
	for _, t := range []*iptables.IPTables{b.v4, b.v6} {
		lines, err := t.List(natTable, postrouting)
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			m := commentRE.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			if name, ok := strings.CutPrefix(m[1], jumpComment); ok && !slices.Contains(nets, name) {
				nets = append(nets, name)
			}
		}
	}
	return nets, nil
}
