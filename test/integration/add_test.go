package integration

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/pkg/bridge"
	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

func TestRepeatedAddConverges(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(nil))
	first := b.mustAdd(conf, "net1")
	rules, table := b.podRules("-4"), b.inPod("ip", "route", "show", "table", "1")

	second, err := b.add(conf, "net1")
	require.NoError(t, err, "a repeated ADD must not fail with 'file exists'")
	assert.Equal(t, first.IPs, second.IPs)
	assert.Equal(t, first.Interfaces, second.Interfaces)
	assert.Equal(t, rules, b.podRules("-4"))
	assert.Equal(t, table, b.inPod("ip", "route", "show", "table", "1"))
	assert.Len(t, b.hostVeths(), 1)
	assert.Equal(t, []string{"net1/10.240.10.2"}, b.reservations())
}

func TestResultForMultus(t *testing.T) {
	b := newBed(t)
	res := b.mustAdd(b.conf(net1(map[string]any{"cniVersion": "1.1.0", "mtu": 1400, "dns": map[string]any{"nameservers": []string{"10.240.0.10"}}})), "net1")
	require.Len(t, res.Interfaces, 3)
	assert.Equal(t, "cni1", res.Interfaces[0].Name)
	assert.Equal(t, b.hostVeths()[0], res.Interfaces[1].Name)
	pod := res.Interfaces[2]
	assert.Equal(t, "net1", pod.Name)
	assert.Equal(t, b.pod.Path(), pod.Sandbox)
	assert.Equal(t, 1400, pod.Mtu)
	assert.Contains(t, b.inPod("ip", "-o", "link", "show", "net1")[0], "mtu 1400")
	podMAC := strings.Fields(b.inPod("ip", "-o", "link", "show", "net1")[0])
	assert.Contains(t, podMAC, pod.Mac)
	require.Len(t, res.IPs, 1)
	assert.Equal(t, 2, *res.IPs[0].Interface)
	assert.Equal(t, "10.240.10.2/24", res.IPs[0].Address.String())
	assert.Equal(t, "10.240.10.1", res.IPs[0].Gateway.String())
	require.Len(t, res.Routes, 1)
	assert.Equal(t, "0.0.0.0/0", res.Routes[0].Dst.String())
	assert.Equal(t, "10.240.10.1", res.Routes[0].GW.String(), "a default route always names its gateway")
	assert.Equal(t, 1, *res.Routes[0].Table)
	assert.Equal(t, []string{"10.240.0.10"}, res.DNS.Nameservers)
}

// Known failure 6: two attachments without "table" get distinct tables,
// deterministically; a repeated ADD keeps them. Known failure 10: never
// preference 0.
func TestAutomaticTablesAndPriorities(t *testing.T) {
	b := newBed(t)
	auto := func(name, bridge, subnet string) map[string]any {
		return map[string]any{"name": name, "bridge": bridge, "isGateway": true,
			"ipam": nettest.HostLocal(subnet, map[string]any{"routes": nettest.DefaultRoute})}
	}
	a := b.conf(auto("auto-a", "cnia", "10.240.61.0/24"))
	c := b.conf(auto("auto-c", "cnic", "10.240.62.0/24"))
	b.mustAdd(a, "net1")
	b.mustAdd(c, "net2")
	b.mustAdd(a, "net1")
	want := []string{"100: from 10.240.61.2 lookup 100", "101: from 10.240.62.2 lookup 101"}
	assert.Equal(t, want, b.podRules("-4"))
	assert.Equal(t, []string{"default via 10.240.61.1 dev net1", "10.240.61.0/24 dev net1 scope link src 10.240.61.2"},
		b.inPod("ip", "route", "show", "table", "100"))
	assert.Equal(t, []string{"default via 10.240.62.1 dev net2", "10.240.62.0/24 dev net2 scope link src 10.240.62.2"},
		b.inPod("ip", "route", "show", "table", "101"))
}

func TestTableAndPriorityConflictsAreRefused(t *testing.T) {
	b := newBed(t)
	b.mustAdd(b.conf(net1(nil)), "net1")
	before := snapshot(b)

	clash := b.conf(map[string]any{"name": "net2", "bridge": "cni2", "isGateway": true, "table": 1, "priority": 102,
		"ipam": nettest.HostLocal("10.240.20.0/24", nil)})
	_, err := b.add(clash, "net2")
	e := cniCode(t, err)
	assert.Equal(t, uint(types.ErrInvalidNetworkConfig), e.Code)
	assert.Equal(t, `table 1 asked for by net2 is already used in the pod by rule "101: from 10.240.10.2 lookup 1" of interface net1`, e.Msg)
	assert.Equal(t, before, snapshot(b), "a refused ADD changes nothing")

	clash = b.conf(map[string]any{"name": "net2", "bridge": "cni2", "isGateway": true, "table": 2, "priority": 101,
		"ipam": nettest.HostLocal("10.240.20.0/24", nil)})
	_, err = b.add(clash, "net2")
	assert.Equal(t, `priority 101 asked for by net2 is already used in the pod by rule "101: from 10.240.10.2 lookup 1" of interface net1`, cniCode(t, err).Msg)
	assert.Equal(t, before, snapshot(b))
}

func TestInvalidConfigChangesNothing(t *testing.T) {
	b := newBed(t)
	before := snapshot(b)
	_, err := b.add(b.conf(net1(map[string]any{"table": 254})), "net1")
	e := cniCode(t, err)
	assert.Equal(t, uint(types.ErrInvalidNetworkConfig), e.Code)
	assert.Equal(t, `invalid "table" 254: 254 is the kernel's "main" table`, e.Msg)
	assert.Contains(t, e.Details, "use 1-252 or 256-2147483647")
	assert.Equal(t, before, snapshot(b))
	assert.NotContains(t, linkNames(t, b.node), "cni1", "not even the bridge is created")
}

func TestInterfaceNameTakenByAnotherPlugin(t *testing.T) {
	b := newBed(t)
	nettest.MustRun(t, b.pod, "ip", "link", "add", "net1", "type", "veth", "peer", "name", "other0")
	before := snapshot(b)
	_, err := b.add(b.conf(net1(nil)), "net1")
	e := cniCode(t, err)
	assert.Equal(t, uint(types.ErrInvalidEnvironmentVariables), e.Code)
	assert.Equal(t, `CNI_IFNAME "net1": the pod already has that interface, not created by multi-bridge for network "net1" and container `+b.id, e.Msg)
	assert.Equal(t, before, snapshot(b))
}

func TestStaticIPAMAndRequestedMAC(t *testing.T) {
	b := newBed(t)
	conf := b.conf(map[string]any{"name": "static-net", "bridge": "cni5", "isGateway": true, "table": 5, "priority": 105,
		"capabilities": map[string]bool{"mac": true},
		"ipam": map[string]any{"type": "static", "addresses": []map[string]any{{"address": "10.240.50.7/24", "gateway": "10.240.50.1"}},
			"routes": []map[string]any{{"dst": "0.0.0.0/0"}}}})
	rt := b.rtc("net5")
	rt.CapabilityArgs = map[string]any{"mac": "0a:58:0a:f0:32:07"}
	res, err := b.rt.Add(conf, rt)
	require.NoError(t, err)
	assert.Equal(t, "0a:58:0a:f0:32:07", res.Interfaces[2].Mac)
	assert.Contains(t, b.inPod("ip", "-o", "link", "show", "net5")[0], "link/ether 0a:58:0a:f0:32:07")
	assert.Equal(t, []string{"105: from 10.240.50.7 lookup 5"}, b.podRules("-4"))
	assert.Equal(t, []string{"default via 10.240.50.1 dev net5", "10.240.50.0/24 dev net5 scope link src 10.240.50.7"},
		b.inPod("ip", "route", "show", "table", "5"))
	require.NoError(t, b.rt.Del(conf, rt))
	assert.Equal(t, []string{"lo"}, linkNames(t, b.pod))
}

func TestBridgeAndPortOptions(t *testing.T) {
	b := newBed(t)
	b.mustAdd(b.conf(net1(map[string]any{"hairpinMode": true, "promiscMode": true})), "net1")
	veth := b.hostVeths()[0]
	assert.Contains(t, strings.Join(b.onNode("ip", "-d", "link", "show", veth), " "), "hairpin on")
	assert.Contains(t, b.onNode("ip", "link", "show", "cni1")[0], "PROMISC")
	assert.Equal(t, []string{"1"}, b.onNode("sysctl", "-n", "net.ipv4.ip_forward"), "a gateway bridge needs forwarding")
}

// forceAddress replaces a stray address on a bridge multi-bridge created,
// never on one somebody else made.
func TestForceAddress(t *testing.T) {
	b := newBed(t)
	// A layer-2 network creates cni1 (marked as multi-bridge's); then an
	// address appears on it by hand.
	b.mustAdd(b.conf(map[string]any{"name": "l2", "bridge": "cni1"}), "net9")
	nettest.MustRun(t, b.node, "ip", "addr", "add", "10.240.10.254/24", "dev", "cni1")
	_, err := b.add(b.conf(net1(nil)), "net1")
	assert.Contains(t, cniCode(t, err).Msg, `cni1 already has 10.240.10.254/24, not the gateway 10.240.10.1/24 of this network; set "forceAddress": true`)
	assert.Equal(t, []string{bridge.HostVethName("l2", b.id, "net9")}, b.hostVeths(), "the failed ADD rolled back")
	assert.Empty(t, b.reservations())

	b.mustAdd(b.conf(net1(map[string]any{"forceAddress": true})), "net1")
	addrs := strings.Join(b.onNode("ip", "-4", "-o", "addr", "show", "cni1"), "\n")
	assert.Contains(t, addrs, "inet 10.240.10.1/24")
	assert.NotContains(t, addrs, "10.240.10.254")
}

func TestForceAddressLeavesABridgeItDidNotCreate(t *testing.T) {
	b := newBed(t)
	adminBridge(t, b)
	before := snapshot(b)
	_, err := b.add(b.conf(net1(map[string]any{"forceAddress": true})), "net1")
	e := cniCode(t, err)
	assert.Equal(t, uint(types.ErrInvalidNetworkConfig), e.Code)
	assert.Equal(t, "cni1 already has 10.240.10.254/24, not the gateway 10.240.10.1/24 of this network, and forceAddress only replaces addresses on bridges multi-bridge created; remove the address by hand or use another bridge", e.Msg)
	assert.Equal(t, before, snapshot(b), "the address stays, everything rolled back")
}

func TestLayer2Attachment(t *testing.T) {
	b := newBed(t)
	conf := b.conf(map[string]any{"name": "l2", "bridge": "br-l2"})
	res := b.mustAdd(conf, "net3")
	assert.Empty(t, res.IPs)
	assert.Contains(t, b.inPod("ip", "-o", "link", "show", "net3")[0], "state UP")
	assert.Empty(t, b.podRules("-4"))
	require.NoError(t, b.del(conf, "net3"))
	assert.Empty(t, b.hostVeths())
}

func TestLogFileGetsPodIdentityAndStdoutOnlyTheResult(t *testing.T) {
	b := newBed(t)
	logFile := b.dirs.Data + "/plugin.log"
	conf := b.conf(net1(map[string]any{"logFile": logFile, "logLevel": "debug"}))
	raw, err := b.rt.AddRaw(conf, b.rtc("net1"))
	require.NoError(t, err, "libcni parses stdout as the result: nothing else may be there")
	_, err = current.NewResultFromResult(raw)
	require.NoError(t, err)
	log, err := os.ReadFile(logFile)
	require.NoError(t, err)
	assert.Contains(t, string(log), `msg="ADD done" verb=ADD network=net1 pod=demo/netshoot1 containerID=`+b.id+` ifname=net1`)
}

// carrier matches what the kernel changes on its own, asynchronously, when a
// bridge's last port goes: carrier and operational state.
var carrier = regexp.MustCompile(`NO-CARRIER,|,LOWER_UP| state [A-Z]+| linkdown`)

// snapshot is the state a failed or refused ADD must leave unchanged: links,
// addresses, routes of every table and rules of both namespaces, the
// firewall, IPAM reservations and multi-bridge's own state files.
func snapshot(b *bed) string {
	b.t.Helper()
	var parts []string
	for _, n := range []struct {
		name string
		run  func(...string) []string
	}{{"node", b.onNode}, {"pod", b.inPod}} {
		for _, cmd := range [][]string{
			{"ip", "-o", "link", "show"}, {"ip", "-o", "addr", "show"},
			{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
			{"ip", "-4", "rule"}, {"ip", "-6", "rule"},
		} {
			parts = append(parts, n.name+"$ "+strings.Join(cmd, " "))
			for _, l := range n.run(cmd...) {
				parts = append(parts, carrier.ReplaceAllString(l, ""))
			}
		}
	}
	for _, cmd := range [][]string{{"nft", "list", "ruleset"}, {"iptables", "-t", "nat", "-S"}, {"ip6tables", "-t", "nat", "-S"}} {
		parts = append(parts, "node$ "+strings.Join(cmd, " "))
		parts = append(parts, b.onNode(cmd...)...)
	}
	parts = append(parts, "ipam:")
	parts = append(parts, b.reservations()...)
	parts = append(parts, "state:")
	entries, _ := os.ReadDir(b.dirs.Data)
	for _, e := range entries {
		files, _ := os.ReadDir(b.dirs.Data + "/" + e.Name())
		for _, f := range files {
			parts = append(parts, e.Name()+"/"+f.Name())
		}
	}
	return strings.Join(parts, "\n")
}

// A repeated ADD whose configuration now asks for another table and
// preference converges to them: the old rule and table are gone.
func TestRepeatedAddWithNewTableConverges(t *testing.T) {
	b := newBed(t)
	b.mustAdd(b.conf(net1(map[string]any{"table": 11, "priority": 111})), "net1")
	conf := b.conf(net1(map[string]any{"table": 21, "priority": 121, "cniVersion": "1.1.0"}))
	b.mustAdd(conf, "net1")
	assert.Equal(t, []string{"121: from 10.240.10.2 lookup 21"}, b.podRules("-4"))
	assert.Empty(t, b.inPod("ip", "route", "show", "table", "11"))
	assert.Equal(t, []string{"default via 10.240.10.1 dev net1", "10.240.10.0/24 dev net1 scope link src 10.240.10.2"},
		b.inPod("ip", "route", "show", "table", "21"))
	require.NoError(t, b.rt.Check(conf, b.rtc("net1")), "the record follows the new table")
}

func TestDefaultGatewayOnTwoNetworksIsRefused(t *testing.T) {
	b := newBed(t)
	b.mustAdd(b.conf(map[string]any{"name": "mgmt", "bridge": "cni0", "isDefaultGateway": true, "table": 0,
		"ipam": nettest.HostLocal("10.240.0.0/24", nil)}), "eth0")
	before := snapshot(b)
	_, err := b.add(b.conf(net1(map[string]any{"isDefaultGateway": true})), "net1")
	e := cniCode(t, err)
	assert.Equal(t, uint(types.ErrInvalidNetworkConfig), e.Code)
	assert.Equal(t, `the pod's main table already has a default route via 10.240.0.1 on interface eth0 (network mgmt); isDefaultGateway of network "net1" would replace it`, e.Msg)
	assert.Equal(t, before, snapshot(b), "rolled back")
}

func TestBridgeNameTakenByAnotherInterface(t *testing.T) {
	b := newBed(t)
	nettest.MustRun(t, b.node, "ip", "link", "add", "cni1", "type", "veth", "peer", "name", "cni1peer")
	before := snapshot(b)
	_, err := b.add(b.conf(net1(nil)), "net1")
	e := cniCode(t, err)
	assert.Equal(t, uint(types.ErrInvalidNetworkConfig), e.Code)
	assert.Equal(t, `invalid "bridge" "cni1": interface "cni1" exists on the node and is a veth, not a bridge`, e.Msg)
	assert.Equal(t, before, snapshot(b), "refused before any change")
}

// Container IDs and interface names may both contain '_': two attachments
// must never share a state file.
func TestAttachmentsWhoseNamesLookAlike(t *testing.T) {
	b := newBed(t)
	conf := b.conf(net1(nil))
	other := nettest.NewNS(t)
	_, err := b.rt.Add(conf, runtimeConf("p_q", b.pod.Path(), "net1"))
	require.NoError(t, err)
	_, err = b.rt.Add(conf, runtimeConf("p", other.Path(), "q_net1"))
	require.NoError(t, err)
	assert.Equal(t, []string{"lo", "net1"}, linkNames(t, b.pod), "the first pod keeps its interface")
	assert.Equal(t, []string{"net1/10.240.10.2", "net1/10.240.10.3"}, b.reservations())
}

// CNI_ARGS as some runtimes merge it: a pair without '=', one with two, an
// unknown key and no IgnoreUnknown. The IPAM plugin only gets what it can
// parse, led by IgnoreUnknown=1.
func TestMalformedArgsDoNotFailADD(t *testing.T) {
	b := newBed(t)
	rt := b.rtc("net1")
	rt.Args = [][2]string{{"K8S_POD_NAMESPACE", "demo"}, {"K8S_POD_NAME", "p"}, {"garbage", ""}, {"K", "a=b"}, {"SOMETHING_NEW", "x"}}
	res, err := b.rt.Add(b.conf(net1(nil)), rt)
	require.NoError(t, err)
	assert.Equal(t, "10.240.10.2/24", res.IPs[0].Address.String())
}
