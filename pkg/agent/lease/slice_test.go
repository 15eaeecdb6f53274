package lease

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/validation"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestFirstFree(t *testing.T) {
	for _, tc := range []struct {
		name string
		pool string
		size int
		used []string
		want string // "" = pool full
	}{
		{"empty pool gives the first slice", "10.240.16.0/20", 24, nil, "10.240.16.0/24"},
		{"skips taken slices in address order", "10.240.16.0/20", 24, []string{"10.240.16.0/24", "10.240.17.0/24"}, "10.240.18.0/24"},
		{"fills a hole first", "10.240.16.0/20", 24, []string{"10.240.16.0/24", "10.240.18.0/24"}, "10.240.17.0/24"},
		{"order of used does not matter", "10.240.16.0/20", 24, []string{"10.240.18.0/24", "10.240.16.0/24", "10.240.17.0/24"}, "10.240.19.0/24"},
		{"ignores prefixes outside the pool", "10.240.16.0/20", 24, []string{"10.240.0.0/24", "10.240.32.0/24", "192.0.2.0/24"}, "10.240.16.0/24"},
		{"ignores the other family", "10.240.16.0/20", 24, []string{"fd00::/64"}, "10.240.16.0/24"},
		{"a larger old lease blocks all it covers", "10.240.16.0/20", 26, []string{"10.240.16.0/24"}, "10.240.17.0/26"},
		{"a smaller old lease blocks its slice", "10.240.16.0/20", 24, []string{"10.240.16.128/26"}, "10.240.17.0/24"},
		{"nested used prefixes", "10.240.16.0/20", 24, []string{"10.240.16.0/23", "10.240.16.0/24", "10.240.17.0/25"}, "10.240.18.0/24"},
		{"pool covered by a used prefix", "10.240.16.0/20", 24, []string{"10.240.0.0/16"}, ""},
		{"full pool", "10.240.16.0/29", 30, []string{"10.240.16.0/30", "10.240.16.4/30"}, ""},
		{"last slice", "10.240.16.0/29", 30, []string{"10.240.16.0/30"}, "10.240.16.4/30"},
		{"pool given unmasked", "10.240.16.5/20", 24, nil, "10.240.16.0/24"},
		{"size shorter than the pool", "10.240.16.0/20", 16, nil, ""},
		{"top of the IPv4 space", "255.255.255.0/24", 25, []string{"255.255.255.0/25"}, "255.255.255.128/25"},
		{"top of the IPv4 space full", "255.255.255.0/24", 25, []string{"255.255.255.0/25", "255.255.255.128/25"}, ""},
		{"IPv6 /64 slices", "fd00:10:240::/48", 64, []string{"fd00:10:240::/64", "fd00:10:240:1::/64"}, "fd00:10:240:2::/64"},
		{"IPv6 slices crossing 64 bits", "fd00::/56", 120, []string{"fd00::/120"}, "fd00::100/120"},
		{"IPv6 top of the space", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120", 121, []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/121"}, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80/121"},
		{"IPv6 top of the space full", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120", 121, []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120"}, ""},
		{"IPv6 huge pool with a used /64", "2001:db8::/32", 64, []string{"2001:db8::/64"}, "2001:db8:0:1::/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := FirstFree(netip.MustParsePrefix(tc.pool), tc.size, prefixes(tc.used...))
			if tc.want == "" {
				assert.False(t, ok, "got %s", got)
				return
			}
			require.True(t, ok)
			assert.Equal(t, tc.want, got.String())
		})
	}
}

// TestChoose: a node that lost its lease takes its old slice again when it
// is free, instead of the first free one (its pods still use the old one's
// addresses).
func TestChoose(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prefer string
		used   []string
		want   string // "" = pool full
	}{
		{"no preference: first free", "", []string{"10.240.17.0/24"}, "10.240.16.0/24"},
		{"the old slice, although a lower one is free", "10.240.17.0/24", []string{"10.240.18.0/24"}, "10.240.17.0/24"},
		{"the old slice taken: first free", "10.240.17.0/24", []string{"10.240.17.0/24"}, "10.240.16.0/24"},
		{"the old slice partly covered by an old lease: first free", "10.240.17.0/24", []string{"10.240.17.128/25"}, "10.240.16.0/24"},
		{"the old slice outside the pool: first free", "10.240.64.0/24", nil, "10.240.16.0/24"},
		{"the old slice of another size: first free", "10.240.17.0/25", nil, "10.240.16.0/24"},
		{"the old slice not aligned: first free", "10.240.17.8/24", nil, "10.240.16.0/24"},
		{"the old slice of the other family: first free", "fd00::/24", nil, "10.240.16.0/24"},
		{"pool full, the old slice included", "10.240.31.0/24", []string{"10.240.16.0/20"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var prefer netip.Prefix
			if tc.prefer != "" {
				prefer = netip.MustParsePrefix(tc.prefer)
			}
			got, ok := Choose(netip.MustParsePrefix("10.240.16.0/20"), 24, prefer, prefixes(tc.used...))
			if tc.want == "" {
				assert.False(t, ok, "got %s", got)
				return
			}
			require.True(t, ok)
			assert.Equal(t, tc.want, got.String())
		})
	}
	got, ok := Choose(netip.MustParsePrefix("fd00:10:240:1000::/56"), 64, netip.MustParsePrefix("fd00:10:240:1005::/64"), prefixes("fd00:10:240:1000::/64"))
	require.True(t, ok)
	assert.Equal(t, "fd00:10:240:1005::/64", got.String(), "IPv6")
}

// TestFirstFreeFillsThePool takes slices one after the other until the pool
// is full: every slice exactly once, in order.
func TestFirstFreeFillsThePool(t *testing.T) {
	pool := netip.MustParsePrefix("10.240.16.0/20")
	var used []netip.Prefix
	for i := 0; i < 16; i++ {
		s, ok := FirstFree(pool, 24, used)
		require.True(t, ok, "slice %d", i)
		assert.Equal(t, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 240, byte(16 + i), 0}), 24), s)
		used = append(used, s)
	}
	_, ok := FirstFree(pool, 24, used)
	assert.False(t, ok)
}

func TestName(t *testing.T) {
	for _, tc := range []struct{ network, subnet, want string }{
		{"net1", "10.240.16.0/24", "net1.10-240-16-0-24"},
		{"net1", "10.240.16.7/24", "net1.10-240-16-0-24"},
		{"mgmt", "fd00:10:240:1::/64", "mgmt.fd00-10-240-1---64"},
		{"my.net", "10.240.16.0/24", "my.net.10-240-16-0-24"},
		{"Net_1", "10.240.16.0/24", "net-1-" + hashOf("Net_1") + ".10-240-16-0-24"},
	} {
		got := Name(tc.network, netip.MustParsePrefix(tc.subnet))
		assert.Equal(t, tc.want, got)
		assert.Empty(t, validation.IsDNS1123Subdomain(got), "%q must be a valid object name", got)
	}
	// Distinct networks that sanitize alike keep distinct names.
	assert.NotEqual(t, Name("Net_1", netip.MustParsePrefix("10.0.0.0/24")), Name("net-1", netip.MustParsePrefix("10.0.0.0/24")))
	long := strings.Repeat("n", 300)
	assert.Empty(t, validation.IsDNS1123Subdomain(Name(long, netip.MustParsePrefix("10.0.0.0/24"))))
}

func hashOf(s string) string { return strings.TrimPrefix(hashed("", s), "h-") }

func TestLabelValue(t *testing.T) {
	assert.Equal(t, "node-a", LabelValue("node-a"))
	assert.Equal(t, "Net_1", LabelValue("Net_1"))
	long := strings.Repeat("a", 64)
	v := LabelValue(long)
	assert.Equal(t, "h-"+hashOf(long), v)
	assert.Empty(t, validation.IsValidLabelValue(v))
	assert.NotEqual(t, LabelValue(long), LabelValue(long+"b"))
}

func TestObjectRoundTrip(t *testing.T) {
	l := Lease{Network: "net1", Node: "node-a", Pool: netip.MustParsePrefix("10.240.16.0/20"), Subnet: netip.MustParsePrefix("10.240.17.0/24")}
	u := l.Object("uid-1")
	assert.Equal(t, "net1.10-240-17-0-24", u.GetName())
	assert.Equal(t, map[string]string{LabelNetwork: "net1", LabelNode: "node-a"}, u.GetLabels())
	require.Len(t, u.GetOwnerReferences(), 1)
	assert.Equal(t, NodeOwner("node-a", "uid-1"), u.GetOwnerReferences()[0])
	u.SetUID("lease-uid")
	u.SetResourceVersion("42")

	got, err := FromObject(u)
	require.NoError(t, err)
	want := l
	want.Name, want.UID, want.ResourceVersion, want.OwnerUID = "net1.10-240-17-0-24", "lease-uid", "42", "uid-1"
	assert.Equal(t, want, got)
	assert.True(t, got.Canonical())

	u.SetName("hand-made")
	got, err = FromObject(u)
	require.NoError(t, err)
	assert.False(t, got.Canonical())

	_ = unstructuredSet(u, "not-a-prefix", "spec", "subnet")
	_, err = FromObject(u)
	assert.ErrorContains(t, err, `SubnetLease hand-made: spec.subnet "not-a-prefix"`)
}

func TestRequestFits(t *testing.T) {
	r := Request{Network: "net1", Node: "a", Pool: netip.MustParsePrefix("10.240.16.0/20"), Size: 24}
	ok := Lease{Network: "net1", Node: "a", Subnet: netip.MustParsePrefix("10.240.17.0/24")}
	ok.Name = Name(ok.Network, ok.Subnet)
	assert.True(t, r.Fits(ok))
	for name, mutate := range map[string]func(*Lease){
		"other node":    func(l *Lease) { l.Node = "b" },
		"other network": func(l *Lease) { l.Network = "net2"; l.Name = Name(l.Network, l.Subnet) },
		"outside pool":  func(l *Lease) { l.Subnet = netip.MustParsePrefix("10.240.32.0/24"); l.Name = Name(l.Network, l.Subnet) },
		"other size":    func(l *Lease) { l.Subnet = netip.MustParsePrefix("10.240.17.0/25"); l.Name = Name(l.Network, l.Subnet) },
		"not canonical": func(l *Lease) { l.Name = "by-hand" },
		"other family":  func(l *Lease) { l.Subnet = netip.MustParsePrefix("fd00::/24"); l.Name = Name(l.Network, l.Subnet) },
	} {
		l := ok
		mutate(&l)
		assert.False(t, r.Fits(l), name)
	}
}

func TestExhaustedError(t *testing.T) {
	err := &ExhaustedError{Network: "net1", Node: "c", Pool: netip.MustParsePrefix("10.240.16.0/29"), Size: 30, Leased: 2}
	assert.Equal(t, `network "net1": pool 10.240.16.0/29 has no free /30 slice left for node "c" (2 of 2 slices leased): `+
		`enlarge nodeSubnets.pool, use a longer nodeSubnets.size, or delete the SubnetLeases of nodes that are gone `+
		`(kubectl get subnetleases -l multi-bridge.cni.dev/network=net1)`, err.Error())
	assert.Equal(t, "2^80", SliceCount(netip.MustParsePrefix("2001:db8::/48"), 128))
}

func unstructuredSet(u interface{ UnstructuredContent() map[string]any }, value string, path ...string) error {
	m := u.UnstructuredContent()
	for _, p := range path[:len(path)-1] {
		m = m[p].(map[string]any)
	}
	m[path[len(path)-1]] = value
	return nil
}
