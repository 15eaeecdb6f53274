package masq

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestPlanSubnetOnly(t *testing.T) {
	rules := Plan(prefixes("10.240.10.5/24"), nil)
	assert.Equal(t, []Rule{{Subnet: netip.MustParsePrefix("10.240.10.0/24"), Exclude: prefixes("10.240.10.0/24", "224.0.0.0/4")}}, rules)
	assert.Equal(t, "ip saddr 10.240.10.0/24 ip daddr != { 10.240.10.0/24, 224.0.0.0/4 } masquerade", ruleText(rules[0]))
}

// Known failure 9: with a cluster-wide pool, traffic to other nodes' slices
// (10.240.11.5 is in the pool, not in this node's slice) keeps its source.
func TestPlanExcludesThePool(t *testing.T) {
	pool := netip.MustParsePrefix("10.240.0.0/16")
	rules := Plan(prefixes("10.240.10.0/24"), &pool)
	assert.Equal(t, prefixes("10.240.0.0/16", "224.0.0.0/4"), rules[0].Exclude, "the slice is inside the pool, so only the pool is listed")
	assert.True(t, excluded(rules[0], netip.MustParseAddr("10.240.11.5")))
	assert.False(t, excluded(rules[0], netip.MustParseAddr("198.51.100.2")))
	assert.Equal(t, "ip saddr 10.240.10.0/24 ip daddr != { 10.240.0.0/16, 224.0.0.0/4 } masquerade", ruleText(rules[0]))
}

func excluded(r Rule, dst netip.Addr) bool {
	for _, e := range r.Exclude {
		if e.Contains(dst) {
			return true
		}
	}
	return false
}

func TestPlanDualStack(t *testing.T) {
	pool := netip.MustParsePrefix("10.240.0.0/16")
	rules := Plan(prefixes("10.240.10.2/24", "fd00:10:240::2/64", "10.240.10.3/24"), &pool)
	assert.Len(t, rules, 2, "one rule per distinct subnet")
	assert.Equal(t, prefixes("fd00:10:240::/64", "ff00::/8"), rules[1].Exclude, "an IPv4 pool never excludes IPv6")
	assert.Equal(t, "ip6 saddr fd00:10:240::/64 ip6 daddr != { fd00:10:240::/64, ff00::/8 } masquerade", ruleText(rules[1]))
}

func TestDescribeRoundTrip(t *testing.T) {
	pool := netip.MustParsePrefix("10.240.0.0/16")
	r := Plan(prefixes("10.240.10.0/24"), &pool)[0]
	assert.Equal(t, "10.240.10.0/24 except 10.240.0.0/16,224.0.0.0/4", r.Describe())
	back, ok := parseDescribe(r.Describe())
	assert.True(t, ok)
	assert.Equal(t, r, back)
	_, ok = parseDescribe("something else")
	assert.False(t, ok)
}

func TestWithoutCovered(t *testing.T) {
	assert.Equal(t, prefixes("10.0.0.0/8"), withoutCovered(prefixes("10.1.0.0/16", "10.0.0.0/8", "10.0.0.0/8")))
	assert.Equal(t, prefixes("10.1.0.0/16", "10.2.0.0/16"), withoutCovered(prefixes("10.1.0.0/16", "10.2.0.0/16")))
}
