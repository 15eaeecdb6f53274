package integration

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// The WAN host has no route to the pods: only a masqueraded packet gets an
// answer. The same pod is tried without masquerade, with nftables and with
// the iptables fallback.
func TestMasqueradeBackends(t *testing.T) {
	for _, c := range []struct {
		name    string
		extra   map[string]any
		reaches bool
		state   []string // what the node's firewall shows for the network
	}{
		{"off", map[string]any{"ipMasq": false}, false, nil},
		{"nftables", map[string]any{"ipMasq": true, "ipMasqBackend": "nftables"}, true, []string{"nft", "list", "chain", "inet", "multi-bridge", "masq-net1"}},
		{"iptables", map[string]any{"ipMasq": true, "ipMasqBackend": "iptables"}, true, []string{"iptables", "-t", "nat", "-S"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := nettest.NewSeed(t)
			conf := nettest.Conf(t, s.Dirs, net1(c.extra))
			rt := runtimeConf("masq-"+c.name, s.Pod.Path(), "net1")
			_, err := s.RT.Add(conf, rt)
			require.NoError(t, err)
			out, err := nettest.Ping(s.Pod, "-I", "10.240.10.2", nettest.Internet)
			if c.reaches {
				assert.NoError(t, err, out)
			} else {
				assert.Error(t, err, "without masquerade the WAN host cannot answer: %s", out)
			}
			if c.state == nil {
				return
			}
			state := nettest.MustRun(t, s.Node, c.state[0], c.state[1:]...)
			assert.Contains(t, state, "10.240.10.0/24")
			assert.Equal(t, 1, strings.Count(state, "MASQUERADE")+strings.Count(state, "masquerade comment"), state)
			// A second pod on the network adds nothing to the firewall.
			other := nettest.NewNS(t)
			_, err = s.RT.Add(conf, runtimeConf("masq-other-"+c.name, other.Path(), "net1"))
			require.NoError(t, err)
			assert.Equal(t, state, nettest.MustRun(t, s.Node, c.state[0], c.state[1:]...))
			if nettest.CNIVersion() >= "0.4.0" {
				require.NoError(t, s.RT.Check(conf, rt), "CHECK sees the masquerade state")
			}
		})
	}
}
