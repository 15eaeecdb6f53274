// Package masq keeps the node's masquerade state for multi-bridge networks.
//
// State is per network, never per pod: a network's rules masquerade traffic
// from its subnets to anything outside the network's pool, so host firewall
// state does not grow with the number of pods, and DEL of a pod (even with its
// netns gone) has nothing firewall-related to undo. Backends: nftables through
// sigs.k8s.io/knftables, iptables through coreos/go-iptables where nftables is
// absent.
package masq

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Rule masquerades traffic from Subnet to every destination outside Exclude.
type Rule struct {
	Subnet  netip.Prefix
	Exclude []netip.Prefix
}

// Key identifies a rule inside its network's state (one rule per subnet).
func (r Rule) Key() string { return r.Subnet.String() }

// Describe is stored as the rule's comment: a changed exclusion list (the
// pool of a network grew) shows up as a different comment and is replaced.
func (r Rule) Describe() string {
	var ex []string
	for _, e := range r.Exclude {
		ex = append(ex, e.String())
	}
	return r.Subnet.String() + " except " + strings.Join(ex, ",")
}

var (
	multicast4 = netip.MustParsePrefix("224.0.0.0/4")
	multicast6 = netip.MustParsePrefix("ff00::/8")
)

// Plan computes the masquerade rules of an attachment's subnets. pool, when
// given, is the whole cluster-wide range of the network: traffic to other
// nodes' slices keeps its source address. Multicast is never masqueraded.
func Plan(subnets []netip.Prefix, pool *netip.Prefix) []Rule {
	var rules []Rule
	for _, s := range subnets {
		s = s.Masked()
		ex := []netip.Prefix{s}
		if pool != nil && pool.Addr().Is4() == s.Addr().Is4() {
			ex = append(ex, *pool)
		}
		if s.Addr().Is4() {
			ex = append(ex, multicast4)
		} else {
			ex = append(ex, multicast6)
		}
		r := Rule{Subnet: s, Exclude: withoutCovered(ex)}
		if !slices.ContainsFunc(rules, func(o Rule) bool { return o.Key() == r.Key() }) {
			rules = append(rules, r)
		}
	}
	return rules
}

// withoutCovered drops prefixes contained in another one of the list: nft
// refuses overlapping intervals in an anonymous set.
func withoutCovered(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for i, p := range ps {
		covered := false
		for j, q := range ps {
			if i != j && q.Bits() <= p.Bits() && q.Contains(p.Addr()) && (q.Bits() < p.Bits() || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}

// Backend keeps per-network masquerade state on the node.
type Backend interface {
	// Name is "nftables" or "iptables".
	Name() string
	// Ensure makes the network's state hold these rules (others of the
	// network are kept) and reports whether it changed anything.
	Ensure(ctx context.Context, network string, rules []Rule) (changed bool, err error)
	// Verify reports rules of the list that are missing.
	Verify(ctx context.Context, network string, rules []Rule) error
	// Remove deletes all state of the network; absent state is not an error.
	Remove(ctx context.Context, network string) error
	// Networks lists the networks that have state.
	Networks(ctx context.Context) ([]string, error)
}

// New returns the backend for mode: "nftables", "iptables", or "" for
// nftables when the node can run it and iptables otherwise.
func New(mode string) (Backend, error) {
	switch mode {
	case "nftables":
		return newNFTables()
	case "iptables":
		return newIPTables()
	case "":
		nft, nftErr := newNFTables()
		if nftErr == nil {
			return nft, nil
		}
		ipt, iptErr := newIPTables()
		if iptErr == nil {
			return ipt, nil
		}
		return nil, fmt.Errorf("neither nftables (%v) nor iptables (%v) is usable on this node; install the nftables package", nftErr, iptErr)
	default:
		return nil, fmt.Errorf("unknown masquerade backend %q", mode)
	}
}
