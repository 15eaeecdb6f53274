package integration

// One test per entry of the field-failure list (../shared/known-failures.md)
// that a single node can show; entry 9 (masquerade between nodes) is also
// covered here with a pool, and end to end in the multi-node tests.

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

func dualStack(name, bridge string, table, priority int, extra map[string]any) map[string]any {
	m := map[string]any{"name": name, "bridge": bridge, "isGateway": true, "table": table, "priority": priority,
		"ipam": map[string]any{"type": "host-local",
			"ranges": [][]map[string]any{{{"subnet": "10.240.40.0/24"}}, {{"subnet": "fd00:10:240:40::/64"}}},
			"routes": []map[string]any{{"dst": "0.0.0.0/0"}, {"dst": "::/0"}}}}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// 1. IPv6 source rule matching every source.
func TestKnownFailure1IPv6RuleMatchesOneAddress(t *testing.T) {
	b := newBed(t)
	b.mustAdd(b.conf(dualStack("ds", "cni4", 5, 105, nil)), "net1")
	assert.Equal(t, []string{"105: from fd00:10:240:40::2 lookup 5"}, b.podRules("-6"))
	assert.Equal(t, []string{"105: from 10.240.40.2 lookup 5"}, b.podRules("-4"))
	for _, l := range b.inPod("ip", "-6", "rule") {
		assert.NotContains(t, l, "from all lookup 5")
	}
}

// 2. Rule pointing at an empty table.
func TestKnownFailure2ExplicitTableHoldsTheRoutes(t *testing.T) {
	b := newBed(t)
	b.mustAdd(b.conf(net1(map[string]any{"table": 7, "priority": 107})), "net1")
	assert.Equal(t, []string{"default via 10.240.10.1 dev net1", "10.240.10.0/24 dev net1 scope link src 10.240.10.2"},
		b.inPod("ip", "route", "show", "table", "7"))
	assert.Equal(t, []string{"107: from 10.240.10.2 lookup 7"}, b.podRules("-4"))
}

// 3. veth left behind after a failed ADD (IPAM exhausted after the veth
// was created).
func TestKnownFailure3NoVethAfterIPAMFailure(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(map[string]any{"ipam": nettest.HostLocal("10.240.10.0/24",
		map[string]any{"rangeStart": "10.240.10.50", "rangeEnd": "10.240.10.50"})}))
	b.mustAdd(conf, "net1")
	second := nettest.NewNS(t)
	_, err := b.rt.Add(conf, runtimeConf("second-pod", second.Path(), "net1"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no IP addresses available in range set: 10.240.10.50-10.240.10.50")
	assert.Len(t, b.hostVeths(), 1, "exactly the first pod's veth")
	assert.Equal(t, []string{"lo"}, linkNames(t, second))
	assert.Equal(t, []string{"net1/10.240.10.50"}, b.reservations())
}

// 5. Dual-stack static IP through Multus: IP=<v4>,<v6> in CNI_ARGS.
func TestKnownFailure5DualStackStaticIPFromMultusArgs(t *testing.T) {
	b := newBed(t)
	conf := b.conf(dualStack("ds", "cni4", 5, 105, nil))
	rt := b.rtc("net1")
	rt.Args = parseArgs(multusArgs + ";IP=10.240.40.52/24,fd00:10:240:40::5/64")
	res, err := b.rt.Add(conf, rt)
	require.NoError(t, err)
	require.Len(t, res.IPs, 2)
	assert.Equal(t, "10.240.40.52/24", res.IPs[0].Address.String())
	assert.Equal(t, "fd00:10:240:40::5/64", res.IPs[1].Address.String())
	addrs := strings.Join(b.inPod("ip", "-o", "addr", "show", "net1"), "\n")
	assert.Contains(t, addrs, "inet 10.240.40.52/24")
	assert.Contains(t, addrs, "inet6 fd00:10:240:40::5/64")
}

// 7. Same subnet on two networks: every route of table 102 is dev net2.
// The bridges hold no gateway: the node itself cannot have one subnet on two
// bridges (TestOverlappingGatewaySubnetsAreRefused), but the pods' tables
// keep the networks apart.
func TestKnownFailure7SameSubnetOnTwoNetworks(t *testing.T) {
	b := newBed(t)
	same := func(name, bridge string, table int, start, end string) map[string]any {
		return map[string]any{"name": name, "bridge": bridge, "table": table, "priority": table,
			"ipam": nettest.HostLocal("10.240.110.0/24", map[string]any{"rangeStart": start, "rangeEnd": end, "gateway": "10.240.110.1",
				"routes": nettest.DefaultRoute})}
	}
	b.mustAdd(b.conf(same("same-a", "cnisa", 101, "10.240.110.10", "10.240.110.19")), "net1")
	b.mustAdd(b.conf(same("same-b", "cnisb", 102, "10.240.110.20", "10.240.110.29")), "net2")
	assert.Equal(t, []string{"default via 10.240.110.1 dev net2", "10.240.110.0/24 dev net2 scope link src 10.240.110.20"},
		b.inPod("ip", "route", "show", "table", "102"))
	assert.Equal(t, []string{"default via 10.240.110.1 dev net1", "10.240.110.0/24 dev net1 scope link src 10.240.110.10"},
		b.inPod("ip", "route", "show", "table", "101"))
}

// 9. With a cluster-wide pool, the masquerade rule keeps the pool's
// destinations (other nodes' pods) unmasqueraded.
func TestKnownFailure9MasqueradeExcludesThePool(t *testing.T) {
	b := newBed(t)
	nettest.MustRun(t, b.node, "mkdir", "-p", b.dirs.Runtime+"/subnets")
	nettest.MustRun(t, b.node, "sh", "-c", `echo '{"network":"pooled","node":"n1","pool":"10.240.0.0/16","subnet":"10.240.10.0/24"}' > `+b.dirs.Runtime+"/subnets/pooled.json")
	conf := b.conf(map[string]any{"name": "pooled", "bridge": "cni1", "isGateway": true, "ipMasq": true, "table": 1, "priority": 101,
		"nodeSubnets": map[string]any{"pool": "10.240.0.0/16", "size": 24},
		"ipam":        map[string]any{"type": "host-local", "routes": nettest.DefaultRoute}})
	res := b.mustAdd(conf, "net1")
	assert.Equal(t, "10.240.10.2/24", res.IPs[0].Address.String(), "allocated from the node's slice")
	assert.Equal(t, []string{
		`ip saddr 10.240.10.0/24 ip daddr != { 10.240.0.0/16, 224.0.0.0/4 } masquerade comment "10.240.10.0/24 except 10.240.0.0/16,224.0.0.0/4"`,
	}, grep(b.onNode("nft", "list", "ruleset"), "masquerade comment"))
}

// The plugin without the agent's file: a clear, retryable error.
func TestNodeSliceNotLeasedYet(t *testing.T) {
	b := newBed(t)
	conf := b.conf(map[string]any{"name": "pooled", "bridge": "cni1", "isGateway": true,
		"nodeSubnets": map[string]any{"pool": "10.240.0.0/16", "size": 24},
		"ipam":        map[string]any{"type": "host-local"}})
	_, err := b.add(conf, "net1")
	e := cniCode(t, err)
	assert.Equal(t, uint(11), e.Code, "try again later")
	assert.Equal(t, `this node has no slice of network "pooled"'s pool 10.240.0.0/16 yet`, e.Msg)
	assert.Contains(t, e.Details, b.dirs.Runtime+"/subnets/pooled.json")
	assert.Empty(t, b.hostVeths())
}
