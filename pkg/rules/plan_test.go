package rules

import (
	"net"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
)

func route(dst, gw string) *types.Route {
	_, n, err := net.ParseCIDR(dst)
	if err != nil {
		panic(err)
	}
	r := &types.Route{Dst: *n}
	if gw != "" {
		r.GW = net.ParseIP(gw)
	}
	return r
}

func addr(prefix, gw string) Address {
	a := Address{Prefix: netip.MustParsePrefix(prefix)}
	if gw != "" {
		a.Gateway = netip.MustParseAddr(gw)
	}
	return a
}

func formatRoutes(rs []netlink.Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, FormatRoute(r))
	}
	return out
}

func formatRules(rs []netlink.Rule) []string {
	var out []string
	for _, r := range rs {
		out = append(out, FormatRule(r))
	}
	return out
}

// The seed's net1: table 1, preference 101, default route from IPAM.
func TestPlanSeedNet1(t *testing.T) {
	p := BuildPlan(Attachment{
		IfName: "net1", LinkIndex: 7, Table: 1, Priority: 101,
		Addresses: []Address{addr("10.240.10.2/24", "10.240.10.1")},
		Routes:    []*types.Route{route("0.0.0.0/0", "")},
	})
	assert.Equal(t, []string{
		"10.240.10.0/24 dev #7 src 10.240.10.2 table 1",
		"default via 10.240.10.1 dev #7 table 1",
	}, formatRoutes(p.Routes))
	assert.Equal(t, []string{"101: from 10.240.10.2 lookup 1"}, formatRules(p.Rules))
	assert.Equal(t, netlink.SCOPE_LINK, p.Routes[0].Scope)
}

// Known failure 2: an explicit table must hold the routes, not main.
func TestPlanExplicitTableHoldsRoutes(t *testing.T) {
	p := BuildPlan(Attachment{
		IfName: "net1", LinkIndex: 3, Table: 7, Priority: 107,
		Addresses: []Address{addr("10.240.30.5/24", "10.240.30.1")},
		Routes:    []*types.Route{route("0.0.0.0/0", ""), route("192.0.2.0/24", "10.240.30.254")},
	})
	for _, r := range p.Routes {
		assert.Equal(t, 7, r.Table, FormatRoute(r))
	}
	assert.Equal(t, []string{
		"10.240.30.0/24 dev #3 src 10.240.30.5 table 7",
		"default via 10.240.30.1 dev #3 table 7",
		"192.0.2.0/24 via 10.240.30.254 dev #3 table 7",
	}, formatRoutes(p.Routes))
}

// Known failure 1: the IPv6 rule matches the one address (/128), never the
// subnet (/64) or everything.
func TestPlanDualStackRulesUseFullLength(t *testing.T) {
	p := BuildPlan(Attachment{
		IfName: "net1", LinkIndex: 4, Table: 5, Priority: 105,
		Addresses: []Address{addr("10.240.40.2/24", "10.240.40.1"), addr("fd00:10:240:40::2/64", "fd00:10:240:40::1")},
		Routes:    []*types.Route{route("0.0.0.0/0", ""), route("::/0", "")},
	})
	assert.Equal(t, []string{"105: from 10.240.40.2 lookup 5", "105: from fd00:10:240:40::2 lookup 5"}, formatRules(p.Rules))
	ones, bits := p.Rules[1].Src.Mask.Size()
	assert.Equal(t, 128, ones)
	assert.Equal(t, 128, bits)
	assert.Equal(t, netlink.FAMILY_V6, p.Rules[1].Family)
	assert.Equal(t, []string{
		"10.240.40.0/24 dev #4 src 10.240.40.2 table 5",
		"fd00:10:240:40::/64 dev #4 src fd00:10:240:40::2 table 5",
		"default via 10.240.40.1 dev #4 table 5",
		"default via fd00:10:240:40::1 dev #4 table 5",
	}, formatRoutes(p.Routes))
}

// Known failure 7: two networks with the same subnet; every route names its
// own interface.
func TestPlanSameSubnetRoutesNameTheirInterface(t *testing.T) {
	for _, a := range []Attachment{
		{IfName: "net1", LinkIndex: 11, Table: 101, Priority: 101, Addresses: []Address{addr("10.10.10.10/24", "10.10.10.1")}, Routes: []*types.Route{route("0.0.0.0/0", "")}},
		{IfName: "net2", LinkIndex: 12, Table: 102, Priority: 102, Addresses: []Address{addr("10.10.10.20/24", "10.10.10.1")}, Routes: []*types.Route{route("0.0.0.0/0", "")}},
	} {
		for _, r := range BuildPlan(a).Routes {
			assert.Equal(t, a.LinkIndex, r.LinkIndex, "%s: %s", a.IfName, FormatRoute(r))
		}
	}
}

// Table 0: routes in main, no rule (the seed's management network).
func TestPlanMainTable(t *testing.T) {
	p := BuildPlan(Attachment{
		IfName: "eth0", LinkIndex: 2, Table: MainTable, Priority: 100, DefaultInMain: true,
		Addresses: []Address{addr("10.240.0.4/24", "10.240.0.1")},
		Routes:    []*types.Route{route("0.0.0.0/0", "10.240.0.1")},
	})
	assert.Empty(t, p.Rules)
	assert.Equal(t, []string{"default via 10.240.0.1 dev #2 table main"}, formatRoutes(p.Routes))
}

// isDefaultGateway on a policy-routed attachment: the default route goes to
// its table and to main.
func TestPlanDefaultGatewayAlsoInMain(t *testing.T) {
	p := BuildPlan(Attachment{
		IfName: "net1", LinkIndex: 5, Table: 3, Priority: 103, DefaultInMain: true,
		Addresses: []Address{addr("10.240.50.2/24", "10.240.50.1")},
		Routes:    []*types.Route{route("0.0.0.0/0", "10.240.50.1"), route("192.0.2.0/24", "")},
	})
	assert.Equal(t, []string{
		"10.240.50.0/24 dev #5 src 10.240.50.2 table 3",
		"default via 10.240.50.1 dev #5 table 3",
		"default via 10.240.50.1 dev #5 table main",
		"192.0.2.0/24 via 10.240.50.1 dev #5 table 3",
	}, formatRoutes(p.Routes))
}

func TestPlanRouteWithoutGatewayIsOnLink(t *testing.T) {
	p := BuildPlan(Attachment{IfName: "net1", LinkIndex: 5, Table: 3, Priority: 103,
		Addresses: []Address{addr("10.240.50.2/24", "")}, Routes: []*types.Route{route("198.51.100.0/24", "")}})
	require.Len(t, p.Routes, 2)
	assert.Nil(t, p.Routes[1].Gw)
	assert.Equal(t, netlink.SCOPE_LINK, p.Routes[1].Scope)
}

func TestPlanRouteAttributes(t *testing.T) {
	r := route("198.51.100.0/24", "10.240.50.1")
	r.MTU, r.AdvMSS, r.Priority = 1400, 1360, 50
	p := BuildPlan(Attachment{IfName: "net1", LinkIndex: 5, Table: 3, Priority: 103,
		Addresses: []Address{addr("10.240.50.2/24", "10.240.50.1")}, Routes: []*types.Route{r}})
	got := p.Routes[1]
	assert.Equal(t, 1400, got.MTU)
	assert.Equal(t, 1360, got.AdvMSS)
	assert.Equal(t, 50, got.Priority)
}

func rule(pref, table int, src string) netlink.Rule {
	return SourceRule(netip.MustParseAddr(src), table, pref)
}

func builtins() []netlink.Rule {
	var rs []netlink.Rule
	for _, p := range []struct{ pref, table int }{{0, 255}, {32766, 254}, {32767, 253}} {
		r := netlink.NewRule()
		r.Priority, r.Table = p.pref, p.table
		rs = append(rs, *r)
	}
	return rs
}

// Known failure 6 and 10: automatic choices are distinct, deterministic,
// kept on re-ADD, and never preference 0.
func TestChooseAutomatic(t *testing.T) {
	auto := config.Routing{Mode: config.RoutingAuto}
	pod := PodRules{Rules: builtins()}
	first, err := Choose(auto, "net1", nil, pod)
	require.NoError(t, err)
	assert.Equal(t, Choice{Table: 100, Priority: 100}, first)

	pod.Rules = append(pod.Rules, rule(100, 100, "10.240.10.2"))
	pod.Owners = map[netip.Addr]string{netip.MustParseAddr("10.240.10.2"): "net1"}
	second, err := Choose(auto, "net2", nil, pod)
	require.NoError(t, err)
	assert.Equal(t, Choice{Table: 101, Priority: 101}, second)

	again, err := Choose(auto, "net1", []netip.Addr{netip.MustParseAddr("10.240.10.2")}, pod)
	require.NoError(t, err)
	assert.Equal(t, first, again, "a repeated ADD keeps its numbers")
}

func TestChooseSkipsReservedTables(t *testing.T) {
	var rs []netlink.Rule
	for i := 0; i < 153; i++ { // tables 100-252
		rs = append(rs, rule(1000+i, 100+i, netip.AddrFrom4([4]byte{10, 240, 1, byte(i)}).String()))
	}
	c, err := Choose(config.Routing{Mode: config.RoutingAuto}, "net9", nil, PodRules{Rules: append(builtins(), rs...)})
	require.NoError(t, err)
	assert.Equal(t, 256, c.Table, "253-255 are the kernel's tables")
}

func TestChooseRefusesTakenTableAndPriority(t *testing.T) {
	pod := PodRules{
		Rules:  append(builtins(), rule(101, 1, "10.240.10.2")),
		Owners: map[netip.Addr]string{netip.MustParseAddr("10.240.10.2"): "net1"},
	}
	_, err := Choose(config.Routing{Mode: config.RoutingTable, Table: 1, Priority: 102}, "net2", nil, pod)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `table 1 asked for by net2 is already used in the pod by rule "101: from 10.240.10.2 lookup 1" of interface net1`)

	_, err = Choose(config.Routing{Mode: config.RoutingTable, Table: 2, Priority: 101}, "net2", nil, pod)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `priority 101 asked for by net2 is already used in the pod by rule "101: from 10.240.10.2 lookup 1" of interface net1`)

	c, err := Choose(config.Routing{Mode: config.RoutingTable, Table: 1, Priority: 101}, "net1", []netip.Addr{netip.MustParseAddr("10.240.10.2")}, pod)
	require.NoError(t, err, "the attachment's own rules are no conflict")
	assert.Equal(t, Choice{Table: 1, Priority: 101}, c)
}

func TestChooseMain(t *testing.T) {
	c, err := Choose(config.Routing{Mode: config.RoutingMain, Priority: 100}, "eth0", nil, PodRules{Rules: builtins()})
	require.NoError(t, err)
	assert.Equal(t, Choice{Table: MainTable}, c)
}

func TestFormatRule(t *testing.T) {
	r := netlink.NewRule()
	r.Priority, r.Table = 0, 255
	assert.Equal(t, "0: from all lookup local", FormatRule(*r))
	assert.Equal(t, "102: from 10.240.20.2 lookup 2", FormatRule(rule(102, 2, "10.240.20.2")))
}
