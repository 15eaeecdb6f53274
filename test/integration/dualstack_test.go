package integration

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

func dualStackNet1(extra map[string]any) map[string]any {
	m := map[string]any{"name": "net1", "bridge": "cni1", "isGateway": true, "ipMasq": true, "table": 1, "priority": 101,
		"ipam": map[string]any{"type": "host-local",
			"ranges": [][]map[string]any{{{"subnet": "10.240.10.0/24"}}, {{"subnet": "fd00:10:240:10::/64"}}},
			"routes": []map[string]any{{"dst": "0.0.0.0/0"}, {"dst": "::/0"}}}}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// A dual-stack attachment in the demo topology: rules for both addresses
// (the IPv6 one /128), both default routes in the attachment's table,
// answers to ping and ping6 from the outside host through the node's strict
// reverse-path filter, masquerade for both families, no DAD delay.
func TestDualStack(t *testing.T) {
	s := nettest.NewSeed(t)
	s.StrictReversePath(t)
	_, err := s.RT.Add(nettest.ExampleConf(t, s.Dirs, "00-mgmt.conf"), runtimeConf("ds-pod", s.Pod.Path(), "eth0"))
	require.NoError(t, err)
	res, err := s.RT.Add(nettest.Conf(t, s.Dirs, dualStackNet1(nil)), runtimeConf("ds-pod", s.Pod.Path(), "net1"))
	require.NoError(t, err)
	require.Len(t, res.IPs, 2)

	assert.Equal(t, []string{"101: from fd00:10:240:10::2 lookup 1"}, grep(nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "-6", "rule")), "lookup 1"))
	assert.Equal(t, []string{"101: from 10.240.10.2 lookup 1"}, grep(nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "-4", "rule")), "lookup 1"))
	assert.Equal(t, []string{
		"fd00:10:240:10::/64 dev net1 src fd00:10:240:10::2 metric 1024 pref medium",
		"default via fd00:10:240:10::1 dev net1 metric 1024 pref medium",
	}, nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "-6", "route", "show", "table", "1")))
	addrs := strings.Join(nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "-6", "addr", "show", "dev", "net1")), "\n")
	assert.Contains(t, addrs, "inet6 fd00:10:240:10::2/64 scope global")
	assert.NotContains(t, addrs, "tentative", "DAD is off unless enabledad")
	assert.Equal(t, []string{"1"}, nettest.Lines(nettest.MustRun(t, s.Node, "sysctl", "-n", "net.ipv6.conf.all.forwarding")))

	for _, addr := range []string{"10.240.10.2", "fd00:10:240:10::2", "10.240.0.2"} {
		out, err := nettest.Ping(s.Outside, addr)
		assert.NoError(t, err, "ping %s from the outside host: %s", addr, out)
	}
	for _, args := range [][]string{{"-I", "fd00:10:240:10::2", nettest.Internet6}, {"-I", "10.240.10.2", nettest.Internet}} {
		out, err := nettest.Ping(s.Pod, args...)
		assert.NoError(t, err, "ping %v: %s (masqueraded, the WAN host has no route back)", args, out)
	}
	assert.Contains(t, nettest.MustRun(t, s.Node, "nft", "list", "chain", "inet", "multi-bridge", "masq-net1"),
		"ip6 saddr fd00:10:240:10::/64 ip6 daddr != { fd00:10:240:10::/64, ff00::/8 } masquerade")

	// Control: without net1's IPv4 rule the reply leaves through eth0 and the
	// filter drops it; a repeated ADD restores the rule and the answers.
	nettest.MustRun(t, s.Pod, "ip", "-4", "rule", "del", "pref", "101")
	out, err := nettest.Ping(s.Outside, "10.240.10.2")
	assert.Error(t, err, "the reply through eth0 must be dropped: %s", out)
	assert.NotContains(t, nettest.MustRun(t, s.Node, "nft", "list", "table", "inet", "rpf"), "packets 0 bytes 0 drop")
	_, err = s.RT.Add(nettest.Conf(t, s.Dirs, dualStackNet1(nil)), runtimeConf("ds-pod", s.Pod.Path(), "net1"))
	require.NoError(t, err)
	out, err = nettest.Ping(s.Outside, "10.240.10.2")
	assert.NoError(t, err, "the repeated ADD restored the rule: %s", out)
}

// With enabledad the pod's IPv6 address has finished DAD when ADD returns.
func TestDualStackWithDAD(t *testing.T) {
	b := newBed(t)
	b.mustAdd(b.conf(dualStackNet1(map[string]any{"enabledad": true})), "net1")
	addrs := strings.Join(b.inPod("ip", "-6", "addr", "show", "dev", "net1"), "\n")
	assert.Contains(t, addrs, "inet6 fd00:10:240:10::2/64 scope global")
	assert.NotContains(t, addrs, "tentative")
}
