package masq

import (
	"context"
	"net/netip"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// Present answers from the kernel's own nftables state, read over netlink,
// exactly what Ensure would find missing.
func TestPresent(t *testing.T) {
	node := nettest.NewNS(t)
	pool := netip.MustParsePrefix("10.240.0.0/16")
	plan := Plan([]netip.Prefix{netip.MustParsePrefix("10.240.10.0/24")}, &pool)
	other := Plan([]netip.Prefix{netip.MustParsePrefix("10.240.10.0/24")}, nil)
	dual := Plan([]netip.Prefix{netip.MustParsePrefix("10.240.10.0/24"), netip.MustParsePrefix("fd00:10:240:10::/64")}, nil)
	require.NoError(t, node.Do(func(ns.NetNS) error {
		ctx := context.Background()
		b, err := New("nftables")
		require.NoError(t, err)
		assert.False(t, Present("net1", plan), "no table yet")
		changed, err := b.Ensure(ctx, "net1", plan)
		require.NoError(t, err)
		require.True(t, changed)
		assert.True(t, Present("net1", plan))
		assert.False(t, Present("net1", other), "same subnet, other exclusions")
		assert.False(t, Present("net2", plan), "another network's chain")
		_, err = b.Ensure(ctx, "net1", dual)
		require.NoError(t, err)
		assert.True(t, Present("net1", dual))
		assert.False(t, Present("net1", nil), "nothing asked is no reason to skip Ensure")
		require.NoError(t, b.Remove(ctx, "net1"))
		assert.False(t, Present("net1", plan), "chain removed")
		return nil
	}))
}
