package routes

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// TestReconcileConvergesInTheKernel applies a plan in a throwaway namespace
// and diffs again: nothing left to do. IPv6 routes added without a metric
// get 1024 from the kernel; the agent took them for someone else's, deleted
// and re-added them on every reconcile, and each change triggered the next
// reconcile (100% CPU on every node of an IPv6 sliced network).
func TestReconcileConvergesInTheKernel(t *testing.T) {
	n := nettest.NewNS(t)
	nettest.Connect(t, nettest.End{NS: n, Name: "eth0", Addrs: []string{"192.0.2.11/24", "2001:db8::11/64"}},
		nettest.End{NS: nettest.NewNS(t), Name: "eth0", Addrs: []string{"192.0.2.12/24", "2001:db8::12/64"}})
	r, err := NewReconciler(n.Path())
	require.NoError(t, err)
	defer r.Close()

	slices := []Slice{
		{Network: "net1", Node: "node-b", Subnet: netip.MustParsePrefix("10.240.17.0/24")},
		{Network: "net6", Node: "node-b", Subnet: netip.MustParsePrefix("fd00:10:240:1001::/64")},
	}
	peers := map[string]Peer{"node-b": {Name: "node-b", InternalIPs: []netip.Addr{a("192.0.2.12"), a("2001:db8::12")}}}
	reconcile := func() Plan {
		t.Helper()
		connected, err := r.Connected()
		require.NoError(t, err)
		desired, problems := Desired("node-a", slices, peers, connected)
		require.Empty(t, problems)
		kernel, err := r.Kernel()
		require.NoError(t, err)
		plan := Diff(desired, kernel)
		failed, err := r.Apply(plan)
		require.NoError(t, err)
		require.Zero(t, failed)
		return plan
	}
	first := reconcile()
	assert.Len(t, first.Replace, 2)
	assert.Empty(t, first.Delete)
	for i := 0; i < 3; i++ {
		again := reconcile()
		assert.True(t, again.Empty(), "reconcile %d changed routes: %+v", i+2, again)
		assert.Equal(t, 2, again.InPlace)
	}
	assert.Equal(t, []string{"10.240.17.0/24 via 192.0.2.12 dev eth0"},
		nettest.Lines(nettest.MustRun(t, n, "ip", "-4", "route", "show", "proto", "201")))
	assert.Equal(t, []string{"fd00:10:240:1001::/64 via 2001:db8::12 dev eth0 metric 1024 pref medium"},
		nettest.Lines(nettest.MustRun(t, n, "ip", "-6", "route", "show", "proto", "201")))

	// Nothing desired any more: both go, and nothing else.
	slices = nil
	gone := reconcile()
	assert.Len(t, gone.Delete, 2)
	assert.Empty(t, nettest.Lines(nettest.MustRun(t, n, "ip", "route", "show", "proto", "201")))
	assert.Empty(t, nettest.Lines(nettest.MustRun(t, n, "ip", "-6", "route", "show", "proto", "201")))
}
