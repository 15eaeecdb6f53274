package integration

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

func TestCheckDetectsDrift(t *testing.T) {
	cases := []struct {
		name  string
		drift func(b *bed)
		want  string
	}{
		{"rule deleted", func(b *bed) { nettest.MustRun(t, b.pod, "ip", "rule", "del", "pref", "101") },
			`missing in the pod: rule "101: from 10.240.10.2 lookup 1"`},
		{"table route deleted", func(b *bed) { nettest.MustRun(t, b.pod, "ip", "route", "del", "default", "table", "1") },
			"missing in the pod: route default via 10.240.10.1 dev net1 table 1"},
		{"address deleted", func(b *bed) { nettest.MustRun(t, b.pod, "ip", "addr", "del", "10.240.10.2/24", "dev", "net1") },
			`address 10.240.10.2/24 is missing from interface "net1"`},
		{"host veth detached", func(b *bed) { nettest.MustRun(t, b.node, "ip", "link", "set", b.hostVeths()[0], "nomaster") },
			"is not attached to bridge \"cni1\""},
		{"masquerade removed", func(b *bed) {
			nettest.MustRun(t, b.node, "nft", "delete", "chain", "inet", "multi-bridge", "masq-net1")
		},
			"masquerade rule missing in nftables chain inet multi-bridge masq-net1"},
		{"bridge deleted", func(b *bed) { nettest.MustRun(t, b.node, "ip", "link", "del", "cni1") },
			`bridge "cni1"`},
		{"gateway removed", func(b *bed) { nettest.MustRun(t, b.node, "ip", "addr", "del", "10.240.10.1/24", "dev", "cni1") },
			`bridge "cni1" lacks the gateway address 10.240.10.1/24`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newBed(t)
			conf := b.conf(net1(map[string]any{"ipMasq": true, "cniVersion": "1.1.0"}))
			b.mustAdd(conf, "net1")
			require.NoError(t, b.rt.Check(conf, b.rtc("net1")), "CHECK passes on an intact attachment")
			c.drift(b)
			err := b.rt.Check(conf, b.rtc("net1"))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

// With the iptables backend, a MASQUERADE rule deleted by hand (its RETURN
// rules, which carry the same comment, still there) is seen by CHECK and put
// back by a repeated ADD.
func TestCheckSeesMissingIPTablesMasquerade(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(map[string]any{"ipMasq": true, "ipMasqBackend": "iptables", "cniVersion": "1.1.0"}))
	b.mustAdd(conf, "net1")
	masq := grep(b.onNode("iptables", "-t", "nat", "-S"), "-j MASQUERADE")
	require.Len(t, masq, 1)
	nettest.MustRun(t, b.node, "sh", "-c", "iptables -t nat "+strings.Replace(masq[0], "-A ", "-D ", 1))
	assert.ErrorContains(t, b.rt.Check(conf, b.rtc("net1")), "masquerade state missing in iptables nat chain")
	b.mustAdd(conf, "net1")
	require.NoError(t, b.rt.Check(conf, b.rtc("net1")))
	assert.Len(t, grep(b.onNode("iptables", "-t", "nat", "-S"), "-j MASQUERADE"), 1)

	// A rule inserted ahead of ours stops the masquerade as surely.
	chain := strings.Fields(masq[0])[1]
	nettest.MustRun(t, b.node, "iptables", "-t", "nat", "-I", chain, "1", "-j", "ACCEPT")
	assert.ErrorContains(t, b.rt.Check(conf, b.rtc("net1")), "1 foreign rule(s) found")
	b.mustAdd(conf, "net1")
	require.NoError(t, b.rt.Check(conf, b.rtc("net1")))
	assert.Empty(t, grep(b.onNode("iptables", "-t", "nat", "-S", chain), "-j ACCEPT"))
}

func TestCheckWithAutomaticTable(t *testing.T) {
	b := newBed(t)
	conf := b.conf(map[string]any{"name": "auto", "bridge": "cnia", "isGateway": true, "cniVersion": "1.1.0",
		"ipam": nettest.HostLocal("10.240.61.0/24", map[string]any{"routes": nettest.DefaultRoute})})
	b.mustAdd(conf, "net1")
	require.NoError(t, b.rt.Check(conf, b.rtc("net1")))
	nettest.MustRun(t, b.pod, "ip", "rule", "del", "pref", "100")
	assert.ErrorContains(t, b.rt.Check(conf, b.rtc("net1")), `rule "100: from 10.240.61.2 lookup 100"`)
}
