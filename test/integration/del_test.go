package integration

import (
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// assertReleased checks that nothing of the bed's attachments is left on the
// node or in IPAM (the pod namespace may be gone).
func assertReleased(t *testing.T, b *bed) {
	t.Helper()
	require.Eventually(t, func() bool { return len(b.hostVeths()) == 0 }, 5*time.Second, 50*time.Millisecond,
		"host veths left: %v", b.hostVeths())
	assert.Empty(t, b.reservations())
	assertNoReservations(t, b.dirs)
}

func TestDelTwice(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(nil))
	b.mustAdd(conf, "net1")
	require.NoError(t, b.del(conf, "net1"))
	require.NoError(t, b.del(conf, "net1"))
	assert.Equal(t, []string{"lo"}, linkNames(t, b.pod))
	assert.Empty(t, b.podRules("-4"))
	assertReleased(t, b)
}

func TestDelWithoutPrevResult(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(nil))
	b.mustAdd(conf, "net1")
	require.NoError(t, b.rt.DelWithoutPrevResult(conf, b.rtc("net1")))
	assert.Equal(t, []string{"lo"}, linkNames(t, b.pod))
	assert.Empty(t, b.podRules("-4"), "the rules are found from the recorded state")
	assertReleased(t, b)
}

func TestDelWithEmptyNetns(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(nil))
	b.mustAdd(conf, "net1")
	rt := b.rtc("net1")
	rt.NetNS = ""
	require.NoError(t, b.rt.Del(conf, rt))
	// The host veth is found by its derived name, and with it the pod end
	// goes; the recorded netns path still reaches the live pod's rules.
	assertReleased(t, b)
	assert.Equal(t, []string{"lo"}, linkNames(t, b.pod))
	assert.Empty(t, b.podRules("-4"))
	b.mustAdd(conf, "net1")
	assert.Equal(t, []string{"101: from 10.240.10.3 lookup 1"}, b.podRules("-4"), "the pod can be attached again")
}

// DEL works with a configuration and CNI_ARGS that ADD would refuse now (a
// NAD edited since the ADD, a typo in the pod's annotation): otherwise the
// attachment could never be torn down and its address stays reserved.
func TestDelWithWhatADDWouldRefuse(t *testing.T) {
	b := newBed(t)
	b.mustAdd(b.conf(net1(nil)), "net1")
	edited := b.conf(net1(map[string]any{"table": 254, "vlan": 5, "mtu": "1500"}))
	rt := b.rtc("net1")
	rt.Args = parseArgs(multusArgs + ";IP=10.240.10.90/24,bogus;MAC=zz")
	_, err := b.rt.Add(edited, rt)
	require.Error(t, err, "ADD refuses it")
	require.NoError(t, b.rt.DelWithoutPrevResult(edited, rt))
	assert.Equal(t, []string{"lo"}, linkNames(t, b.pod))
	assert.Empty(t, b.podRules("-4"))
	assertReleased(t, b)
}

// A nodeSubnets network whose slice this node does not have: ADD fails
// (retryable), and the DEL Multus sends next has nothing to release.
func TestDelWithoutNodeSlice(t *testing.T) {
	b := newBed(t)
	conf := b.conf(map[string]any{"name": "pooled", "bridge": "cni1", "isGateway": true,
		"nodeSubnets": map[string]any{"pool": "10.240.0.0/16", "size": 24}, "ipam": map[string]any{"type": "host-local"}})
	_, err := b.add(conf, "net1")
	require.Error(t, err)
	require.NoError(t, b.rt.DelWithoutPrevResult(conf, b.rtc("net1")))
	rt := b.rtc("net1")
	rt.NetNS = ""
	require.NoError(t, b.rt.DelWithoutPrevResult(conf, rt))
}

// Known failure 4: masquerade state with DEL after the netns is gone and
// CNI_NETNS empty: the per-network rule stays, nothing per pod exists.
func TestDelWithEmptyNetnsLeavesFirewallAsPerNetwork(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(map[string]any{"ipMasq": true}))
	b.mustAdd(conf, "net1")
	firewall := b.onNode("nft", "list", "ruleset")
	nettest.DeleteNS(t, b.pod)
	rt := b.rtc("net1")
	rt.NetNS = ""
	require.NoError(t, b.rt.Del(conf, rt))
	assert.Equal(t, firewall, b.onNode("nft", "list", "ruleset"))
	assert.Equal(t, []string{
		`ip saddr 10.240.10.0/24 ip daddr != { 10.240.10.0/24, 224.0.0.0/4 } masquerade comment "10.240.10.0/24 except 10.240.10.0/24,224.0.0.0/4"`,
	}, grep(firewall, "masquerade comment"))
	assertReleased(t, b)
}

func TestDelAfterNetnsGone(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(nil))
	b.mustAdd(conf, "net1")
	nettest.DeleteNS(t, b.pod)
	require.NoError(t, b.del(conf, "net1"), "a stale netns path is not an error")
	assertReleased(t, b)
}

func TestDelAfterLinkGone(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(nil))
	b.mustAdd(conf, "net1")
	nettest.MustRun(t, b.pod, "ip", "link", "del", "net1")
	assert.Equal(t, []string{"101: from 10.240.10.2 lookup 1"}, b.podRules("-4"), "rules outlive their interface")
	require.NoError(t, b.del(conf, "net1"))
	assert.Empty(t, b.podRules("-4"))
	assertReleased(t, b)
}

func TestDelOfNeverAddedContainer(t *testing.T) {
	b := newBed(t)
	require.NoError(t, b.del(b.conf(net1(nil)), "net1"))
	require.NoError(t, b.rt.DelWithoutPrevResult(b.conf(net1(nil)), b.rtc("net9")))
}

func TestDelWithAnotherIfnameLeavesTheAttachment(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(map[string]any{"cniVersion": "1.1.0"})) // CHECK below
	b.mustAdd(conf, "net1")
	require.NoError(t, b.del(conf, "net2"))
	assert.Equal(t, []string{"lo", "net1"}, linkNames(t, b.pod))
	assert.Equal(t, []string{"101: from 10.240.10.2 lookup 1"}, b.podRules("-4"))
	assert.Equal(t, []string{"net1/10.240.10.2"}, b.reservations())
	require.NoError(t, b.rt.Check(conf, b.rtc("net1")))
}

// Known failure 8: a static IP stays reserved when the node reboots (stale
// netns, no DEL). DEL with the stale path releases it and the pod gets its
// address again.
func TestStaticIPAfterRebootIsReleased(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(map[string]any{"capabilities": map[string]bool{"ips": true}}))
	rt := b.rtc("net1")
	rt.CapabilityArgs = map[string]any{"ips": []string{"10.240.10.77/24"}}
	_, err := b.rt.Add(conf, rt)
	require.NoError(t, err)
	nettest.DeleteNS(t, b.pod)
	require.NoError(t, b.rt.Del(conf, rt))
	assertReleased(t, b)

	b.pod = nettest.NewNS(t)
	rt.NetNS = b.pod.Path()
	res, err := b.rt.Add(conf, rt)
	require.NoError(t, err)
	assert.Equal(t, "10.240.10.77/24", res.IPs[0].Address.String())
}

// What Multus does when a later delegate fails: DEL of the failed one
// without prevResult, then of the earlier ones; then the runtime's own DEL
// with an empty netns. The pod is created again afterwards.
func TestMultusFailurePathThenRecreate(t *testing.T) {
	b := newBed(t)
	eth0 := b.conf(map[string]any{"name": "mgmt", "bridge": "cni0", "isDefaultGateway": true, "table": 0,
		"ipam": nettest.HostLocal("10.240.0.0/24", nil)})
	n1 := b.conf(net1(nil))
	// A one-address range that another pod already holds: the third ADD fails in IPAM.
	full := b.conf(map[string]any{"name": "net2", "bridge": "cni2", "isGateway": true, "table": 2, "priority": 102,
		"ipam": nettest.HostLocal("10.240.20.0/24", map[string]any{"rangeStart": "10.240.20.9", "rangeEnd": "10.240.20.9"})})
	other := nettest.NewNS(t)
	_, err := b.rt.Add(full, runtimeConf("other-pod", other.Path(), "net2"))
	require.NoError(t, err)

	b.mustAdd(eth0, "eth0")
	b.mustAdd(n1, "net1")
	_, err = b.add(full, "net2")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no IP addresses available in range set: 10.240.20.9-10.240.20.9")

	require.NoError(t, b.rt.DelWithoutPrevResult(full, b.rtc("net2")))
	require.NoError(t, b.del(n1, "net1"))
	require.NoError(t, b.del(eth0, "eth0"))
	for _, c := range []struct {
		conf   *libcni.PluginConfig
		ifName string
	}{{full, "net2"}, {n1, "net1"}, {eth0, "eth0"}} {
		rt := b.rtc(c.ifName)
		rt.NetNS = ""
		require.NoError(t, b.rt.DelWithoutPrevResult(c.conf, rt))
	}
	assert.Equal(t, []string{"lo"}, linkNames(t, b.pod))
	assert.Equal(t, []string{"net2/10.240.20.9"}, b.reservations(), "only the other pod's address is held")

	mgmt := b.mustAdd(eth0, "eth0")
	res := b.mustAdd(n1, "net1")
	// host-local hands out addresses round-robin: the pod gets the next one.
	assert.Equal(t, "10.240.10.3/24", res.IPs[0].Address.String())
	assert.Equal(t, []string{"mgmt/" + mgmt.IPs[0].Address.IP.String(), "net1/10.240.10.3", "net2/10.240.20.9"}, b.reservations())
}
