package integration

import (
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
			"missing in the pod: route default via 10.240.10.1 dev #"},
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

func TestCheckWithAutomaticTable(t *testing.T) {
	b := newBed(t)
	conf := b.conf(map[string]any{"name": "auto", "bridge": "cnia", "isGateway": true, "cniVersion": "1.1.0",
		"ipam": nettest.HostLocal("10.240.61.0/24", map[string]any{"routes": nettest.DefaultRoute})})
	b.mustAdd(conf, "net1")
	require.NoError(t, b.rt.Check(conf, b.rtc("net1")))
	nettest.MustRun(t, b.pod, "ip", "rule", "del", "pref", "100")
	assert.ErrorContains(t, b.rt.Check(conf, b.rtc("net1")), `rule "100: from 10.240.61.2 lookup 100"`)
}
