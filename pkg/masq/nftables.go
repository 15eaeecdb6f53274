package masq

import (
	"context"
	"fmt"
	"strings"

	"sigs.k8s.io/knftables"
)

// TableName is the nftables table (family inet) holding every network's chain.
const TableName = "multi-bridge"

// chainPrefix starts each network's chain name: "masq-<network>".
const chainPrefix = "masq-"

// maxChainName keeps within the kernel's NFT_CHAIN_MAXNAMELEN (256).
const maxChainName = 250

// nftBackend gives every network its own base chain on the postrouting hook.
// Several base chains may share a hook, so a network's state is one chain
// that can be created, extended and deleted without touching another
// network's: no read-modify-write of a shared chain, hence no global lock.
type nftBackend struct {
	nft knftables.Interface
}

func newNFTables() (Backend, error) {
	nft, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return nil, err
	}
	return &nftBackend{nft: nft}, nil
}

func (b *nftBackend) Name() string { return "nftables" }

func chainName(network string) (string, error) {
	name := chainPrefix + network
	if len(name) > maxChainName {
		return "", fmt.Errorf("network name %q is too long for an nftables chain (max %d characters)", network, maxChainName-len(chainPrefix))
	}
	return name, nil
}

func (b *nftBackend) baseChain(name, network string) *knftables.Chain {
	return &knftables.Chain{
		Name:     name,
		Type:     knftables.PtrTo(knftables.NATType),
		Hook:     knftables.PtrTo(knftables.PostroutingHook),
		Priority: knftables.PtrTo(knftables.SNATPriority),
		Comment:  knftables.PtrTo("multi-bridge masquerade for network " + network),
	}
}

func ruleText(r Rule) string {
	family := "ip"
	if r.Subnet.Addr().Is6() {
		family = "ip6"
	}
	var ex []string
	for _, e := range r.Exclude {
		ex = append(ex, e.String())
	}
	return knftables.Concat(family, "saddr", r.Subnet.String(), family, "daddr", "!=", "{", strings.Join(ex, ", "), "}", "masquerade")
}

// existing returns the network's rules by comment, or nil when the chain is absent.
func (b *nftBackend) existing(ctx context.Context, chain string) (map[string]*knftables.Rule, error) {
	rules, err := b.nft.ListRules(ctx, chain)
	if knftables.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	byComment := map[string]*knftables.Rule{}
	for _, r := range rules {
		if r.Comment != nil {
			byComment[*r.Comment] = r
		}
	}
	return byComment, nil
}

func (b *nftBackend) Ensure(ctx context.Context, network string, rules []Rule) (bool, error) {
	chain, err := chainName(network)
	if err != nil {
		return false, err
	}
	have, err := b.existing(ctx, chain)
	if err != nil {
		return false, err
	}
	tx := b.nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("multi-bridge: per-network masquerade")})
	tx.Add(b.baseChain(chain, network))
	changed := have == nil
	for _, r := range rules {
		want := r.Describe()
		if _, ok := have[want]; ok {
			continue
		}
		// A rule for the same subnet with other exclusions (the pool
		// changed) is replaced, so the chain never holds two for one subnet.
		for comment, old := range have {
			if strings.HasPrefix(comment, r.Key()+" ") {
				tx.Delete(&knftables.Rule{Chain: chain, Handle: old.Handle})
			}
		}
		tx.Add(&knftables.Rule{Chain: chain, Rule: ruleText(r), Comment: knftables.PtrTo(want)})
		changed = true
	}
	if !changed {
		return false, nil
	}
	if err := b.nft.Run(ctx, tx); err != nil {
		return false, fmt.Errorf("nftables: %w", err)
	}
	return true, nil
}

func (b *nftBackend) Verify(ctx context.Context, network string, rules []Rule) error {
	chain, err := chainName(network)
	if err != nil {
		return err
	}
	have, err := b.existing(ctx, chain)
	if err != nil {
		return err
	}
	var missing []string
	for _, r := range rules {
		if _, ok := have[r.Describe()]; !ok {
			missing = append(missing, fmt.Sprintf("%q", ruleText(r)))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("masquerade rule missing in nftables chain inet %s %s: %s", TableName, chain, strings.Join(missing, ", "))
	}
	return nil
}

func (b *nftBackend) Remove(ctx context.Context, network string) error {
	chain, err := chainName(network)
	if err != nil {
		return err
	}
	// nft 1.0.6 (Debian 12) has no "destroy": adding the chain first makes
	// the delete valid whether or not it existed, in one atomic transaction.
	tx := b.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(b.baseChain(chain, network))
	tx.Flush(&knftables.Chain{Name: chain})
	tx.Delete(&knftables.Chain{Name: chain})
	if err := b.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

func (b *nftBackend) Networks(ctx context.Context) ([]string, error) {
	chains, err := b.nft.List(ctx, "chains")
	if knftables.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var nets []string
	for _, c := range chains {
		if name, ok := strings.CutPrefix(c, chainPrefix); ok {
			nets = append(nets, name)
		}
	}
	return nets, nil
}
