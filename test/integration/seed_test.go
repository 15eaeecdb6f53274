// Package integration runs the built multi-bridge binary through libcni in
// throwaway network namespaces, with the real host-local and static IPAM
// plugins, and checks the kernel state and real traffic.
package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

func TestMain(m *testing.M) { nettest.Main(m) }

// multusArgs is CNI_ARGS as Multus sends it: duplicates, empty values and
// unknown keys included.
const multusArgs = "IgnoreUnknown=true;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=netshoot1;K8S_POD_INFRA_CONTAINER_ID=;K8S_POD_UID=;IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=netshoot1;FOO=bar"

func runtimeConf(containerID, netns, ifName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: ifName, Args: parseArgs(multusArgs)}
}

func parseArgs(s string) [][2]string {
	var out [][2]string
	for _, p := range strings.Split(s, ";") {
		k, v, _ := strings.Cut(p, "=")
		out = append(out, [2]string{k, v})
	}
	return out
}

type attachment struct {
	conf *libcni.PluginConfig
	rt   *libcni.RuntimeConf
}

// addSeedPod attaches the pod to the seed's three networks in annotation
// order, as Multus does: the management network as eth0, then net1, net2.
func addSeedPod(t *testing.T, s *nettest.Seed, containerID string) []attachment {
	t.Helper()
	var atts []attachment
	for _, a := range []struct{ file, ifName string }{
		{"00-mgmt.conf", "eth0"}, {"10-net1.conf", "net1"}, {"20-net2.conf", "net2"},
	} {
		conf := nettest.ExampleConf(t, s.Dirs, a.file)
		rt := runtimeConf(containerID, s.Pod.Path(), a.ifName)
		_, err := s.RT.Add(conf, rt)
		require.NoError(t, err, "ADD %s", a.file)
		atts = append(atts, attachment{conf, rt})
	}
	return atts
}

func TestSeedDemo(t *testing.T) {
	s := nettest.NewSeed(t)
	atts := addSeedPod(t, s, "seed-pod")

	// The seed's four outputs, exactly (the pod is alone, so it gets .2).
	assert.Equal(t, []string{
		"default via 10.240.0.1 dev eth0",
		"10.240.0.0/24 dev eth0 proto kernel scope link src 10.240.0.2",
		"10.240.10.0/24 dev net1 proto kernel scope link src 10.240.10.2",
		"10.240.20.0/24 dev net2 proto kernel scope link src 10.240.20.2",
	}, nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "route")))
	assert.Equal(t, []string{
		"default via 10.240.10.1 dev net1",
		"10.240.10.0/24 dev net1 scope link src 10.240.10.2",
	}, nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "route", "show", "table", "1")))
	assert.Equal(t, []string{
		"default via 10.240.20.1 dev net2",
		"10.240.20.0/24 dev net2 scope link src 10.240.20.2",
	}, nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "route", "show", "table", "2")))
	assert.Equal(t, []string{
		"0: from all lookup local",
		"101: from 10.240.10.2 lookup 1",
		"102: from 10.240.20.2 lookup 2",
		"32766: from all lookup main",
		"32767: from all lookup default",
	}, nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "rule")))

	// Every address answers the outside host although the node drops
	// packets arriving on the wrong interface (rp_filter=1).
	for _, addr := range []string{"10.240.0.2", "10.240.10.2", "10.240.20.2"} {
		out, err := nettest.Ping(s.Outside, addr)
		assert.NoError(t, err, "ping %s from the outside host: %s", addr, out)
	}
	// The pod reaches an address that only the WAN host has, through eth0
	// and from net1's and net2's addresses (their source rules send those
	// through their own tables): only masquerading by the node makes the
	// replies come back. ("-I net1" would bind to the device without a
	// source, which no "from" rule matches; see the README.)
	for _, args := range [][]string{{nettest.Internet}, {"-I", "10.240.10.2", nettest.Internet}, {"-I", "10.240.20.2", nettest.Internet}} {
		out, err := nettest.Ping(s.Pod, args...)
		assert.NoError(t, err, "ping %v from the pod: %s", args, out)
	}

	firewallBefore := nettest.MustRun(t, s.Node, "nft", "list", "ruleset")
	for i := len(atts) - 1; i >= 0; i-- {
		require.NoError(t, s.RT.Del(atts[i].conf, atts[i].rt))
	}
	assertPodEmpty(t, s)
	assertNoHostVeths(t, s)
	assertNoReservations(t, s.Dirs)
	// Masquerade is per network: DEL leaves the three networks' rules as
	// they were and has nothing per pod to remove.
	assert.Equal(t, firewallBefore, nettest.MustRun(t, s.Node, "nft", "list", "ruleset"))
	assert.Equal(t, 3, strings.Count(firewallBefore, "masquerade comment"))
}

// TestRepliesLeaveThroughTheWrongInterfaceWithoutPolicyRouting is the
// counter-proof: net1 with table 0 (routes in main, no rule) answers through
// eth0, the main table's default route, and strict reverse-path filtering on
// the node drops the reply.
func TestRepliesLeaveThroughTheWrongInterfaceWithoutPolicyRouting(t *testing.T) {
	s := nettest.NewSeed(t)
	mgmt := nettest.ExampleConf(t, s.Dirs, "00-mgmt.conf")
	_, err := s.RT.Add(mgmt, runtimeConf("no-policy", s.Pod.Path(), "eth0"))
	require.NoError(t, err)
	net1 := nettest.Conf(t, s.Dirs, map[string]any{
		"name": "net1", "bridge": "cni1", "isGateway": true, "table": 0,
		"ipam": nettest.HostLocal("10.240.10.0/24", nil),
	})
	_, err = s.RT.Add(net1, runtimeConf("no-policy", s.Pod.Path(), "net1"))
	require.NoError(t, err)

	assert.Equal(t, []string{"0: from all lookup local", "32766: from all lookup main", "32767: from all lookup default"},
		nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "rule")))
	out, err := nettest.Ping(s.Outside, "10.240.0.2")
	assert.NoError(t, err, "eth0 answers: %s", out)
	out, err = nettest.Ping(s.Outside, "10.240.10.2")
	assert.Error(t, err, "net1 must not answer without its table and rule: %s", out)
	assert.Contains(t, out, "100% packet loss")

	// Control: the same reply passes once the node stops filtering reverse
	// paths, so the loss above is the wrong-interface reply being dropped.
	for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter", "net.ipv4.conf.cni0.rp_filter", "net.ipv4.conf.cni1.rp_filter"} {
		nettest.Sysctl(t, s.Node, k, "0")
	}
	out, err = nettest.Ping(s.Outside, "10.240.10.2")
	assert.NoError(t, err, "with rp_filter off the reply through eth0 arrives: %s", out)
}

func assertPodEmpty(t *testing.T, s *nettest.Seed) {
	t.Helper()
	assert.Equal(t, []string{"lo"}, linkNames(t, s.Pod))
	assert.Equal(t, []string{"0: from all lookup local", "32766: from all lookup main", "32767: from all lookup default"},
		nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "rule")))
}

func assertNoHostVeths(t *testing.T, s *nettest.Seed) {
	t.Helper()
	for _, name := range linkNames(t, s.Node) {
		assert.False(t, strings.HasPrefix(name, "veth"), "host veth %s left on the node", name)
	}
}

// assertNoReservations checks host-local holds no address (its store keeps
// only its lock and last_reserved_ip files) and multi-bridge no state.
func assertNoReservations(t *testing.T, d nettest.Dirs) {
	t.Helper()
	for _, root := range []string{d.IPAM, d.Data} {
		_ = filepath.WalkDir(root, func(path string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			if name := e.Name(); name != "lock" && !strings.HasPrefix(name, "last_reserved_ip") {
				t.Errorf("left behind: %s", path)
			}
			return nil
		})
	}
}

func linkNames(t *testing.T, n ns.NetNS) []string {
	t.Helper()
	out, err := nettest.Run(n, "ip", "-o", "link", "show")
	require.NoError(t, err, out)
	var names []string
	for _, l := range nettest.Lines(out) {
		f := strings.Fields(l)
		names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
	}
	return names
}
