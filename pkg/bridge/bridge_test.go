package bridge

import (
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// The rollback of the ADD that created a bridge removes it only when no
// other ADD came to use it, including one that found it ready (shared
// lock) and has not attached its veth yet: the second review found a
// rollback deleting the bridge under such an ADD.
func TestCreatorRollbackWaitsForAnADDThatFoundTheBridgeReady(t *testing.T) {
	node := nettest.NewNS(t)
	dir := t.TempDir()
	spec := Spec{Name: "mbt0"}
	var release func()
	require.NoError(t, node.Do(func(ns.NetNS) error {
		unlock, err := Lock(dir, spec.Name)
		require.NoError(t, err)
		_, created, err := Ensure(spec)
		unlock()
		require.NoError(t, err)
		require.True(t, created)
		assert.Equal(t, Marker, mustBridge(t, spec.Name).Alias)

		release, err = SharedLock(dir, spec.Name) // a second ADD finds it ready
		require.NoError(t, err)
		_, ok := Ready(spec)
		require.True(t, ok)
		return nil
	}))

	removed := make(chan error, 1)
	go func() {
		removed <- node.Do(func(ns.NetNS) error { // the creator's rollback
			unlock, err := Lock(dir, spec.Name)
			if err != nil {
				return err
			}
			defer unlock()
			return RemoveIfUnused(spec.Name)
		})
	}()
	select {
	case err := <-removed:
		t.Fatalf("the rollback did not wait for the shared lock (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	require.NoError(t, node.Do(func(ns.NetNS) error { // the second ADD attaches its veth
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vethtest0", MasterIndex: mustBridge(t, spec.Name).Index}, PeerName: "vethtest1"}
		return netlink.LinkAdd(veth)
	}))
	release()
	require.NoError(t, <-removed)
	require.NoError(t, node.Do(func(ns.NetNS) error {
		mustBridge(t, spec.Name)
		return nil
	}), "the bridge stays: a pod is on it")

	// Without a port, the rollback removes the bridge it created.
	require.NoError(t, node.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("vethtest0")
		require.NoError(t, err)
		require.NoError(t, netlink.LinkDel(l))
		require.NoError(t, RemoveIfUnused(spec.Name))
		_, err = netlink.LinkByName(spec.Name)
		assert.ErrorAs(t, err, &netlink.LinkNotFoundError{})
		return nil
	}))
}

// A bridge somebody else made is never removed.
func TestRemoveIfUnusedLeavesOtherBridges(t *testing.T) {
	node := nettest.NewNS(t)
	nettest.MustRun(t, node, "ip", "link", "add", "mbt1", "type", "bridge")
	require.NoError(t, node.Do(func(ns.NetNS) error {
		require.NoError(t, RemoveIfUnused("mbt1"))
		mustBridge(t, "mbt1")
		return nil
	}))
}

func mustBridge(t *testing.T, name string) *netlink.Bridge {
	t.Helper()
	br, err := lookup(name)
	require.NoError(t, err)
	return br
}
