package nettest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
)

// Addresses of the seed topology's outside world (documentation ranges).
const (
	NodeUplink  = "198.51.100.1"
	OutsideHost = "198.51.100.2"
	NodeWAN     = "203.0.113.1"
	// Internet is an address that lives only on the WAN host, which has no
	// route back to the pods: it answers a pod only if the node masquerades.
	Internet = "203.0.113.10"
)

// Seed is the seed demo's topology: a node running the plugin, a pod, an
// outside host that routes the pod range through the node (it pings the
// pods), and a WAN host with no route to the pods (pods reach it only when
// masqueraded). The node filters reverse paths strictly, as the seed's
// cluster did, so a reply leaving through the wrong interface is dropped.
type Seed struct {
	Node, Pod, Outside, WAN ns.NetNS
	RT                      *Runtime
	Dirs                    Dirs
}

// NewSeed builds the topology.
func NewSeed(t testing.TB) *Seed {
	t.Helper()
	s := &Seed{Node: NewNS(t), Pod: NewNS(t), Outside: NewNS(t), WAN: NewNS(t), Dirs: NewDirs(t)}
	s.RT = NewRuntime(t, s.Node)
	Connect(t, End{NS: s.Node, Name: "uplink", Addrs: []string{NodeUplink + "/24", "2001:db8:1::1/64"}},
		End{NS: s.Outside, Name: "eth0", Addrs: []string{OutsideHost + "/24", "2001:db8:1::2/64"}})
	Connect(t, End{NS: s.Node, Name: "wan0", Addrs: []string{NodeWAN + "/24"}},
		End{NS: s.WAN, Name: "eth0", Addrs: []string{Internet + "/24"}})
	MustRun(t, s.Outside, "ip", "route", "add", "10.240.0.0/16", "via", NodeUplink)
	MustRun(t, s.Outside, "ip", "-6", "route", "add", "fd00:10:240::/48", "via", "2001:db8:1::1")
	for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"} {
		Sysctl(t, s.Node, k, "1")
	}
	return s
}

// ExampleConf loads one of the plain CNI configurations in examples/cni and
// points its state, locks and host-local reservations at d.
func ExampleConf(t testing.TB, d Dirs, file string) *libcni.PluginConfig {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(RepoRoot(), "examples", "cni", file))
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	conf["cniVersion"] = CNIVersion()
	return Conf(t, d, conf)
}
