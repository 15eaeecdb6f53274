package integration

// The plugin driven exactly as Multus drives a delegate (see
// ../shared/multus-contract.md): NAD spec.config through the NAD client,
// libcni with Multus's CNI_ARGS and capability args, and the result read
// back with the NAD client's CreateNetworkStatuses.

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"sigs.k8s.io/yaml"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// nadConfig reads an example NAD's spec.config as Multus gets it.
func nadConfig(t *testing.T, file string) (*nadv1.NetworkAttachmentDefinition, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(nettest.RepoRoot(), "examples", "nad", file))
	require.NoError(t, err)
	var nad nadv1.NetworkAttachmentDefinition
	require.NoError(t, yaml.Unmarshal(raw, &nad))
	conf, err := nadutils.GetCNIConfigFromSpec(nad.Spec.Config, nad.Name)
	require.NoError(t, err)
	return &nad, conf
}

// withDirs points a configuration's state at the test's directories, keeping
// every other key as it is.
func withDirs(t *testing.T, d nettest.Dirs, conf []byte, edit func(map[string]any)) *libcni.PluginConfig {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(conf, &m))
	m["dataDir"], m["runtimeDir"], m["cniVersion"] = d.Data, d.Runtime, nettest.CNIVersion()
	if ipam, ok := m["ipam"].(map[string]any); ok && ipam["type"] == "host-local" {
		ipam["dataDir"] = d.IPAM
	}
	if edit != nil {
		edit(m)
	}
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	pc, err := libcni.ConfFromBytes(raw)
	require.NoError(t, err)
	return pc
}

func TestNetworkStatusForEveryVersion(t *testing.T) {
	nettest.Heavy(t)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			b := newBed(t)
			mgmtNAD, mgmtConf := nadConfig(t, "mgmt.yaml")
			net1NAD, net1Conf := nadConfig(t, "net1.yaml")
			setVersion := func(m map[string]any) { m["cniVersion"] = v }

			mgmtRes, err := b.rt.AddRaw(withDirs(t, b.dirs, mgmtConf, setVersion), b.rtc("eth0"))
			require.NoError(t, err)
			net1Res, err := b.rt.AddRaw(withDirs(t, b.dirs, net1Conf, setVersion), b.rtc("net1"))
			require.NoError(t, err)
			assert.Equal(t, v, net1Res.Version())

			statuses, err := nadutils.CreateNetworkStatuses(net1Res, net1NAD.Namespace+"/"+net1NAD.Name, false, nil)
			require.NoError(t, err)
			require.Len(t, statuses, 1, "one entry per attachment: only the pod interface has a sandbox")
			st := statuses[0]
			assert.Equal(t, "default/net1", st.Name)
			assert.Equal(t, "net1", st.Interface)
			assert.Equal(t, []string{"10.240.10.2"}, st.IPs)
			assert.Equal(t, []string{"10.240.10.1"}, st.Gateway)
			assert.Equal(t, podMAC(t, b, "net1"), st.Mac)
			assert.False(t, st.Default)

			statuses, err = nadutils.CreateNetworkStatuses(mgmtRes, mgmtNAD.Namespace+"/"+mgmtNAD.Name, true, nil)
			require.NoError(t, err)
			require.Len(t, statuses, 1)
			assert.Equal(t, "eth0", statuses[0].Interface)
			assert.Equal(t, []string{"10.240.0.2"}, statuses[0].IPs)
			assert.Equal(t, []string{"10.240.0.1"}, statuses[0].Gateway)
			assert.True(t, statuses[0].Default)
			for _, s := range append(statuses, st) {
				assert.NotContains(t, s.Gateway, "<nil>")
			}
		})
	}
}

func podMAC(t *testing.T, b *bed, ifName string) string {
	t.Helper()
	var mac string
	require.NoError(t, b.pod.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifName)
		if err == nil {
			mac = l.Attrs().HardwareAddr.String()
		}
		return err
	}))
	return mac
}

// A NAD as Multus may deliver it: no cniVersion, no name (Multus injects the
// NAD's), keys re-ordered, device-plugin and cni-args keys added.
func TestNADAsMultusDeliversIt(t *testing.T) {
	b := newBed(t)
	nad, _ := nadConfig(t, "net1.yaml")
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(nad.Spec.Config), &m))
	delete(m, "cniVersion")
	delete(m, "name")
	m["deviceID"], m["pciBusID"] = "0000:00:1f.6", "0000:00:1f.6"
	m["args"] = map[string]any{"cni": map[string]any{"customKey": "value"}}
	stripped, err := json.Marshal(m) // Go re-orders the keys
	require.NoError(t, err)
	conf, err := nadutils.GetCNIConfigFromSpec(string(stripped), nad.Name)
	require.NoError(t, err)

	pc := withDirs(t, b.dirs, conf, nil)
	_, err = b.rt.AddRaw(pc, b.rtc("net1"))
	require.NoError(t, err)
	assert.Equal(t, []string{"101: from 10.240.10.2 lookup 1"}, b.podRules("-4"))
	require.NoError(t, b.del(pc, "net1"))
	assertReleased(t, b)
}

// A NAD without cniVersion: libcni passes the single configuration on
// without one, and the plugin answers with its newest result, whose
// interfaces Multus turns into a network-status entry (a 0.1.0 result has
// none).
func TestNADWithoutCNIVersion(t *testing.T) {
	b := newBed(t)
	nad, conf := nadConfig(t, "net1.yaml")
	pc := withDirs(t, b.dirs, conf, func(m map[string]any) { delete(m, "cniVersion") })
	require.NotContains(t, string(pc.Bytes), "cniVersion")
	res, err := b.rt.AddRaw(pc, b.rtc("net1"))
	require.NoError(t, err)
	assert.Equal(t, "1.1.0", res.Version())
	statuses, err := nadutils.CreateNetworkStatuses(res, nad.Namespace+"/"+nad.Name, false, nil)
	require.NoError(t, err)
	require.Len(t, statuses, 1)
	assert.Equal(t, "net1", statuses[0].Interface)
	assert.Equal(t, []string{"10.240.10.2"}, statuses[0].IPs)
	// libcni's own DelNetwork refuses a configuration without version
	// (Multus adds its own version for DEL); the plugin's DEL takes it.
	require.NoError(t, b.rt.DelWithoutPrevResult(pc, b.rtc("net1")))
	assertReleased(t, b)
}

// Multus appends MAC= and IP= to CNI_ARGS for a selection's mac and ips;
// capability args carry them too. Both IPAM plugins honour them.
func TestStaticRequestsFromMultus(t *testing.T) {
	t.Run("host-local via CNI_ARGS", func(t *testing.T) {
		b := newBed(t)
		_, conf := nadConfig(t, "net1.yaml")
		rt := b.rtc("net1")
		rt.Args = parseArgs(multusArgs + ";MAC=0a:58:0a:f0:0a:32;IP=10.240.10.50/24")
		res, err := b.rt.Add(withDirs(t, b.dirs, conf, nil), rt)
		require.NoError(t, err)
		assert.Equal(t, "10.240.10.50/24", res.IPs[0].Address.String())
		assert.Equal(t, "0a:58:0a:f0:0a:32", podMAC(t, b, "net1"))
		assert.Equal(t, []string{"101: from 10.240.10.50 lookup 1"}, b.podRules("-4"))
	})
	t.Run("host-local via capabilities", func(t *testing.T) {
		b := newBed(t)
		_, conf := nadConfig(t, "net1.yaml")
		rt := b.rtc("net1")
		rt.CapabilityArgs = map[string]any{"ips": []string{"10.240.10.51/24"}, "mac": "0a:58:0a:f0:0a:33"}
		res, err := b.rt.Add(withDirs(t, b.dirs, conf, nil), rt)
		require.NoError(t, err)
		assert.Equal(t, "10.240.10.51/24", res.IPs[0].Address.String())
		assert.Equal(t, "0a:58:0a:f0:0a:33", podMAC(t, b, "net1"))
	})
	t.Run("static via capabilities", func(t *testing.T) {
		b := newBed(t)
		pc := b.conf(map[string]any{"name": "static-net", "bridge": "cni5", "isGateway": true, "table": 5, "priority": 105,
			"capabilities": map[string]bool{"ips": true, "mac": true},
			"ipam":         map[string]any{"type": "static", "routes": []map[string]any{{"dst": "0.0.0.0/0"}}}})
		rt := b.rtc("net5")
		rt.CapabilityArgs = map[string]any{"ips": []string{"10.240.50.9/24"}, "mac": "0a:58:0a:f0:32:09"}
		res, err := b.rt.Add(pc, rt)
		require.NoError(t, err)
		assert.Equal(t, "10.240.50.9/24", res.IPs[0].Address.String())
		assert.Equal(t, "0a:58:0a:f0:32:09", podMAC(t, b, "net5"))
		assert.Equal(t, []string{"default via 10.240.50.1 dev net5", "10.240.50.0/24 dev net5 scope link src 10.240.50.9"},
			b.inPod("ip", "route", "show", "table", "5"))
	})
}

// A pod's default-route selection: Multus, after the delegates ran, removes
// the other attachments' default routes from main and adds one via the chosen
// network's gateway. It never touches other tables, so the per-attachment
// tables and rules stay, and the gateway must be reachable on-link.
func TestMultusDefaultRouteKeepsTablesAndRules(t *testing.T) {
	s := nettest.NewSeed(t)
	addSeedPod(t, s, "default-route-pod")
	tables := func() []string {
		var out []string
		for _, tbl := range []string{"1", "2"} {
			out = append(out, nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "route", "show", "table", tbl))...)
		}
		return append(out, nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "rule"))...)
	}
	before := tables()

	require.NoError(t, s.Pod.Do(func(ns.NetNS) error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		routes, err := netlink.RouteList(eth0, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if ones, _ := r.Dst.Mask.Size(); r.Dst == nil || ones == 0 {
				if err := netlink.RouteDel(&r); err != nil {
					return err
				}
			}
		}
		net1, err := netlink.LinkByName("net1")
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: net1.Attrs().Index, Gw: net.ParseIP("10.240.10.1")})
	}), "the gateway multi-bridge returned is reachable on-link from main")

	assert.Equal(t, "default via 10.240.10.1 dev net1", nettest.Lines(nettest.MustRun(t, s.Pod, "ip", "route"))[0])
	assert.Equal(t, before, tables())
	out, err := nettest.Ping(s.Pod, nettest.Internet)
	assert.NoError(t, err, "the pod reaches the outside through net1: %s", out)
	// The policy-routed attachments still answer through their own
	// interfaces. (eth0 has table 0: its replies follow main's default
	// route, now via net1 — which is what table 0 means.)
	for _, addr := range []string{"10.240.10.2", "10.240.20.2"} {
		out, err := nettest.Ping(s.Outside, addr)
		assert.NoError(t, err, "ping %s: %s", addr, out)
	}
}

// Multus hands a conflist NAD to libcni's AddNetworkList.
func TestConflist(t *testing.T) {
	b := newBed(t)
	_, conf := nadConfig(t, "net1.yaml")
	plugin := withDirs(t, b.dirs, conf, func(m map[string]any) { delete(m, "cniVersion"); delete(m, "name") })
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"net1-list","plugins":[` + string(plugin.Bytes) + `]}`))
	require.NoError(t, err)
	res, err := b.rt.AddList(list, b.rtc("net1"))
	require.NoError(t, err)
	assert.Equal(t, "1.0.0", res.Version())
	require.NoError(t, b.rt.CheckList(list, b.rtc("net1")))
	require.NoError(t, b.rt.DelList(list, b.rtc("net1")))
	assertReleased(t, b)
}
