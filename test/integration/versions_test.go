package integration

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

func TestEverySpecVersion(t *testing.T) {
	nettest.Heavy(t)
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			b := newBed(t)
			conf := b.conf(net1(map[string]any{"cniVersion": v}))
			res, err := b.rt.AddRaw(conf, b.rtc("net1"))
			require.NoError(t, err)
			assert.Equal(t, v, res.Version())
			raw, err := json.Marshal(res)
			require.NoError(t, err)
			if v != "1.1.0" {
				assert.NotContains(t, string(raw), `"table"`, "route tables are a 1.1.0 field")
				assert.NotContains(t, string(raw), `"mtu"`, "interface MTU is a 1.1.0 field")
			}
			assert.Equal(t, []string{"101: from 10.240.10.2 lookup 1"}, b.podRules("-4"))
			if v >= "0.4.0" {
				require.NoError(t, b.rt.Check(conf, b.rtc("net1")))
			}
			require.NoError(t, b.del(conf, "net1"))
			assertReleased(t, b)
		})
	}
}

func TestVersionVerb(t *testing.T) {
	nettest.Heavy(t)
	b := newBed(t)
	var supported []string
	require.NoError(t, b.node.Do(func(ns.NetNS) error {
		info, err := b.rt.CNI.GetVersionInfo(context.Background(), "multi-bridge")
		if err == nil {
			supported = info.SupportedVersions()
		}
		return err
	}))
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		assert.Contains(t, supported, v)
	}
}
