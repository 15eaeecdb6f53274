package masq

import (
	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
)

// Present reports whether the network's nftables chain already holds every
// one of rules, reading it over netlink. It is the common case: every ADD
// after a network's first on a node. knftables reads and writes through the
// nft binary, and New plus Ensure run it three times (about 10 ms of a
// 30 ms ADD, and under the network's lock, so parallel ADDs queue behind
// it); this read runs none. Any doubt (no nf_tables, no chain, a rule
// missing) answers false, and the caller goes the full way.
func Present(network string, rules []Rule) bool {
	chain, err := chainName(network)
	if err != nil || len(rules) == 0 {
		return false
	}
	conn, err := nftables.New()
	if err != nil {
		return false
	}
	table := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	got, err := conn.GetRules(table, &nftables.Chain{Name: chain, Table: table})
	if err != nil {
		return false
	}
	have := map[string]bool{}
	for _, r := range got {
		if comment, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
			have[comment] = true
		}
	}
	for _, r := range rules {
		if !have[r.Describe()] {
			return false
		}
	}
	return true
}
