package agent

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/routes"
	"github.com/multi-bridge-cni/multi-bridge/pkg/policy"
)

var (
	t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	t1 = t0.Add(time.Hour)
	t2 = t0.Add(2 * time.Hour)
)

func nad(source string, created time.Time, name, pool string, size int) Network {
	return Network{Name: name, Pool: pfx(pool), Size: size, Source: "nad:" + source, Created: created}
}

func file(source, name, pool string, size int) Network {
	return Network{Name: name, Pool: pfx(pool), Size: size, Source: source}
}

func TestEstablished(t *testing.T) {
	want := []Network{
		file("--cni-config", "mgmt", "10.240.0.0/20", 24),
		file("file:/etc/cni/net.d/00-mgmt.conf", "mgmt", "10.240.0.0/20", 24),
		file("file:/etc/cni/net.d/10-net1.conflist", "net1", "10.240.16.0/20", 24),
		nad("zzz/net1", t0, "net1", "10.240.16.0/20", 24), // the oldest NAD, whatever its name
		nad("default/net1", t1, "net1", "10.240.16.0/20", 24),
		nad("kube-system/net1", t1, "net1", "10.240.16.0/20", 24), // same second: namespace/name
		nad("aaa/net1", t2, "net1", "10.240.64.0/20", 24),
	}
	for i := 0; i < 10; i++ {
		got := slices.Clone(want)
		// A different input order every time (a rotation and a reversal).
		got = append(got[i%len(got):], got[:i%len(got)]...)
		if i%2 == 1 {
			slices.Reverse(got)
		}
		slices.SortStableFunc(got, Established)
		assert.Equal(t, want, got, "input order %d", i)
	}
}

func TestResolve(t *testing.T) {
	net1 := nad("default/net1", t1, "net1", "10.240.16.0/20", 24)
	net2 := nad("default/net2", t1, "net2", "10.240.32.0/20", 24)
	for _, tc := range []struct {
		name    string
		defs    []Network
		want    []Network
		refused []Refusal
	}{
		{
			name: "one definition per network",
			defs: []Network{net2, net1},
			want: []Network{net1, net2},
		},
		{
			name: "definitions that slice alike are one network: the established one's source",
			defs: []Network{nad("other/net1", t2, "net1", "10.240.16.0/20", 24), net1},
			want: []Network{net1},
		},
		{
			// The reviewer's take-over: a new aaa/net1 sorted first by
			// name and made every node release its net1 lease.
			name: "a newer NAD with another pool is ignored, whatever its name",
			defs: []Network{net1, nad("aaa/net1", t2, "net1", "10.240.64.0/20", 24)},
			want: []Network{net1},
			refused: []Refusal{{Reason: ReasonNetworkConflict, Key: "nad:aaa/net1#net1",
				Message: `ignoring nad:aaa/net1: it defines network "net1" as pool 10.240.64.0/20 in /24 slices, ` +
					`but the established definition nad:default/net1 as pool 10.240.16.0/20 in /24 slices; make it slice alike, rename its network or delete it`}},
		},
		{
			name: "another size is a conflict too",
			defs: []Network{nad("b/net1", t2, "net1", "10.240.16.0/20", 25), net1},
			want: []Network{net1},
			refused: []Refusal{{Reason: ReasonNetworkConflict, Key: "nad:b/net1#net1",
				Message: `ignoring nad:b/net1: it defines network "net1" as pool 10.240.16.0/20 in /25 slices, ` +
					`but the established definition nad:default/net1 as pool 10.240.16.0/20 in /24 slices; make it slice alike, rename its network or delete it`}},
		},
		{
			name: "created in the same second: namespace/name decides",
			defs: []Network{nad("b/net1", t1, "net1", "10.240.64.0/20", 24), nad("a/net1", t1, "net1", "10.240.16.0/20", 24)},
			want: []Network{nad("a/net1", t1, "net1", "10.240.16.0/20", 24)},
			refused: []Refusal{{Reason: ReasonNetworkConflict, Key: "nad:b/net1#net1",
				Message: `ignoring nad:b/net1: it defines network "net1" as pool 10.240.64.0/20 in /24 slices, ` +
					`but the established definition nad:a/net1 as pool 10.240.16.0/20 in /24 slices; make it slice alike, rename its network or delete it`}},
		},
		{
			name: "the node's file wins over an older NAD",
			defs: []Network{nad("kube-system/mgmt", t0, "mgmt", "10.240.0.0/16", 24), {Name: "mgmt", Pool: pfx("10.240.0.0/20"), FromNodePodCIDR: true, Source: "file:/etc/cni/net.d/00-mgmt.conf"}},
			want: []Network{{Name: "mgmt", Pool: pfx("10.240.0.0/20"), FromNodePodCIDR: true, Source: "file:/etc/cni/net.d/00-mgmt.conf"}},
			refused: []Refusal{{Reason: ReasonNetworkConflict, Key: "nad:kube-system/mgmt#mgmt",
				Message: `ignoring nad:kube-system/mgmt: it defines network "mgmt" as pool 10.240.0.0/16 in /24 slices, ` +
					`but the established definition file:/etc/cni/net.d/00-mgmt.conf as pool 10.240.0.0/20 from Node podCIDRs; make it slice alike, rename its network or delete it`}},
		},
		{
			// The reviewer's net1 10.240.16.0/20 and net3 10.240.16.0/21
			// leased the same addresses to different nodes.
			name: "a newer network whose pool overlaps an established one's is refused",
			defs: []Network{nad("default/net3", t2, "net3", "10.240.16.0/21", 24), net1, net2},
			want: []Network{net1, net2},
			refused: []Refusal{{Reason: ReasonNetworkConflict, Key: "nad:default/net3#net3#overlap",
				Message: `ignoring network "net3" of nad:default/net3: its pool 10.240.16.0/21 overlaps pool 10.240.16.0/20 of the established network "net1" of nad:default/net1, ` +
					`so both would lease the same addresses to different nodes; give it a pool of its own`}},
		},
		{
			name: "a pool containing an established one is refused as well",
			defs: []Network{nad("default/big", t2, "big", "10.240.0.0/16", 24), net1},
			want: []Network{net1},
			refused: []Refusal{{Reason: ReasonNetworkConflict, Key: "nad:default/big#big#overlap",
				Message: `ignoring network "big" of nad:default/big: its pool 10.240.0.0/16 overlaps pool 10.240.16.0/20 of the established network "net1" of nad:default/net1, ` +
					`so both would lease the same addresses to different nodes; give it a pool of its own`}},
		},
		{
			name: "the node's podCIDR network overlapping an older NAD's pool: the file wins",
			defs: []Network{nad("default/old", t0, "old", "10.240.0.0/22", 24), {Name: "mgmt", Pool: pfx("10.240.0.0/20"), FromNodePodCIDR: true, Source: "file:/etc/cni/net.d/00-mgmt.conf"}},
			want: []Network{{Name: "mgmt", Pool: pfx("10.240.0.0/20"), FromNodePodCIDR: true, Source: "file:/etc/cni/net.d/00-mgmt.conf"}},
			refused: []Refusal{{Reason: ReasonNetworkConflict, Key: "nad:default/old#old#overlap",
				Message: `ignoring network "old" of nad:default/old: its pool 10.240.0.0/22 overlaps pool 10.240.0.0/20 of the established network "mgmt" of file:/etc/cni/net.d/00-mgmt.conf, ` +
					`so both would lease the same addresses to different nodes; give it a pool of its own`}},
		},
		{
			name: "adjacent pools and pools of the other family do not overlap",
			defs: []Network{net1, nad("default/next", t2, "next", "10.240.32.0/20", 24), nad("default/v6", t2, "v6", "fd00:10:240::/48", 64)},
			want: []Network{net1, nad("default/next", t2, "next", "10.240.32.0/20", 24), nad("default/v6", t2, "v6", "fd00:10:240::/48", 64)},
		},
		{
			name: "a refused network's newer definitions do not take its place",
			defs: []Network{net1, nad("a/net3", t1.Add(time.Minute), "net3", "10.240.16.0/21", 24), nad("b/net3", t2, "net3", "10.240.64.0/20", 24)},
			want: []Network{net1},
			refused: []Refusal{
				{Reason: ReasonNetworkConflict, Key: "nad:b/net3#net3",
					Message: `ignoring nad:b/net3: it defines network "net3" as pool 10.240.64.0/20 in /24 slices, ` +
						`but the established definition nad:a/net3 as pool 10.240.16.0/21 in /24 slices; make it slice alike, rename its network or delete it`},
				{Reason: ReasonNetworkConflict, Key: "nad:a/net3#net3#overlap",
					Message: `ignoring network "net3" of nad:a/net3: its pool 10.240.16.0/21 overlaps pool 10.240.16.0/20 of the established network "net1" of nad:default/net1, ` +
						`so both would lease the same addresses to different nodes; give it a pool of its own`},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, refused := Resolve(tc.defs)
			want := map[string]Network{}
			for _, n := range tc.want {
				want[n.Name] = n
			}
			assert.Equal(t, want, got)
			assert.Equal(t, tc.refused, refused)
		})
	}
}

func nadObject(namespace, name, uid string, created time.Time, config string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"spec": map[string]any{"config": config},
	}}
	u.SetNamespace(namespace)
	u.SetName(name)
	u.SetUID(types.UID(uid))
	u.SetCreationTimestamp(metav1.NewTime(created))
	return u
}

func TestNADDefinition(t *testing.T) {
	u := nadObject("default", "net1", "uid-1", t1, nadConf("net1", "10.240.16.0/20"))
	assert.Equal(t, Definition{Source: "nad:default/net1", UID: "uid-1", Created: t1,
		Nets: []Network{nad("default/net1", t1, "net1", "10.240.16.0/20", 24)}}, nadDefinition(u))

	unstructured.RemoveNestedField(u.Object, "spec", "config")
	assert.Equal(t, Definition{Source: "nad:default/net1", UID: "uid-1", Created: t1}, nadDefinition(u),
		"a NAD without config names a file on the node")

	for _, tc := range []struct {
		name, nad, config, network string
	}{
		{"the verifier's edit: not JSON, so the NAD's name (Multus's default)", "net6", "{not json", "net6"},
		{"invalid, but its name is readable", "v6", strings.Replace(nadConf("net6", "fd00:10:240:1000::/56"), `"type"`, `"table":254,"type"`, 1), "net6"},
		{"cut short after its name", "v6", `{"cniVersion":"1.1.0","name":"net6","type":"multi-bri`, "net6"},
		{"a readable name that is no network name: not the NAD's name either (Multus would not use it)", "net6", `{"name":"../x","type":"multi-bridge"}`, ""},
	} {
		u := nadObject("default", tc.nad, "uid-1", t1, tc.config)
		d := nadDefinition(u)
		assert.Error(t, d.Err, tc.name)
		assert.Empty(t, d.Nets, tc.name)
		assert.Equal(t, tc.network, d.Network, tc.name)
	}
}

// TestGatherKeepsTheLastValidDefinition: an invalid edit of a live NAD
// ("table": 254) made every agent drop the network, and with it every
// route to it in the cluster. The NAD's last valid version stays in use,
// as long as it is the same object.
func TestGatherKeepsTheLastValidDefinition(t *testing.T) {
	h := history{}
	valid := nadObject("default", "net1", "uid-1", t1, nadConf("net1", "10.240.16.0/20"))
	net1 := nad("default/net1", t1, "net1", "10.240.16.0/20", 24)
	const tableErr = `nad:default/net1: invalid "table" 254: 254 is the kernel's "main" table; ` +
		`use 1-252 or 256-2147483647, 0 for no policy routing, or omit it to choose automatically`
	invalid := nadObject("default", "net1", "uid-1", t1, strings.Replace(nadConf("net1", "10.240.16.0/20"), `"type"`, `"table":254,"type"`, 1))
	recreated := nadObject("default", "net1", "uid-2", t2, invalid.Object["spec"].(map[string]any)["config"].(string))
	for _, step := range []struct {
		name    string
		nads    []*unstructured.Unstructured
		want    map[string]Network
		refused []Refusal
	}{
		{name: "valid", nads: []*unstructured.Unstructured{valid}, want: map[string]Network{"net1": net1}},
		{
			name: "edited, now invalid: its last valid version stays",
			nads: []*unstructured.Unstructured{invalid},
			want: map[string]Network{"net1": net1},
			refused: []Refusal{{Reason: ReasonBadNetwork, Key: "nad:default/net1", Message: "keeping the last valid definition of nad:default/net1 " +
				"(network net1: pool 10.240.16.0/20 in /24 slices) while it is invalid: " + tableErr}},
		},
		{
			name: "still invalid: still kept",
			nads: []*unstructured.Unstructured{invalid},
			want: map[string]Network{"net1": net1},
			refused: []Refusal{{Reason: ReasonBadNetwork, Key: "nad:default/net1", Message: "keeping the last valid definition of nad:default/net1 " +
				"(network net1: pool 10.240.16.0/20 in /24 slices) while it is invalid: " + tableErr}},
		},
		{
			name: "deleted and created again, invalid: another object, nothing kept",
			nads: []*unstructured.Unstructured{recreated},
			want: map[string]Network{},
			refused: []Refusal{{Reason: ReasonBadNetwork, Key: "nad:default/net1",
				Message: "ignoring an invalid network definition: " + tableErr}},
		},
		{name: "valid again", nads: []*unstructured.Unstructured{valid}, want: map[string]Network{"net1": net1}},
		{name: "deleted: its network goes, and is forgotten", want: map[string]Network{}},
		{
			name: "back, invalid from the start: nothing to keep",
			nads: []*unstructured.Unstructured{invalid},
			want: map[string]Network{},
			refused: []Refusal{{Reason: ReasonBadNetwork, Key: "nad:default/net1",
				Message: "ignoring an invalid network definition: " + tableErr}},
		},
	} {
		var defs []Definition
		for _, u := range step.nads {
			defs = append(defs, nadDefinition(u))
		}
		got, refused := gather(defs, h, State{Node: "node-a"})
		assert.Equal(t, step.want, got, step.name)
		assert.Equal(t, step.refused, refused, step.name)
	}
}

func TestGatherFiles(t *testing.T) {
	mgmt := file("file:/etc/cni/net.d/00-mgmt.conf", "mgmt", "10.240.0.0/20", 24)
	fileErr := errors.New(`file:/etc/cni/net.d/10-bad.conf: invalid "table" 254`)
	defs := []Definition{
		{Source: mgmt.Source, Nets: []Network{mgmt}},
		{Source: "file:/etc/cni/net.d/10-bad.conf", Err: fileErr, Network: "bad"},
		nadDefinition(nadObject("default", "net1", "uid-1", t1, nadConf("net1", "10.240.16.0/20"))),
	}
	got, refused := gather(defs, history{}, State{Node: "node-a"})
	assert.Equal(t, map[string]Network{"mgmt": mgmt, "net1": nad("default/net1", t1, "net1", "10.240.16.0/20", 24)}, got)
	assert.Equal(t, []Refusal{{Reason: ReasonBadNetwork, Key: "file:/etc/cni/net.d/10-bad.conf", Message: "ignoring an invalid network definition: " + fileErr.Error()}}, refused)
}

func nadConf(name, pool string) string {
	return `{"cniVersion":"1.1.0","name":"` + name + `","type":"multi-bridge","bridge":"br-` + name + `",` +
		`"nodeSubnets":{"pool":"` + pool + `","size":24},"ipam":{"type":"host-local"}}`
}

// The node policy's allowedSubnets bound NAD pools; the node's own files
// are the administrator's and always count.
func TestApplyPolicy(t *testing.T) {
	p, err := policy.Parse([]byte(`{"allowedSubnets":["10.240.0.0/16"]}`), "/etc/cni/multi-bridge/policy.json")
	assert.NoError(t, err)
	nets := map[string]Network{
		"net1": nad("default/net1", t0, "net1", "10.240.16.0/20", 24),
		"evil": nad("tenant/evil", t0, "evil", "10.96.0.0/12", 24),
		"mgmt": file("file:/etc/cni/net.d/00-mgmt.conf", "mgmt", "192.0.2.0/24", 26),
	}
	refused := applyPolicy(p, nets, routes.Foreign{})
	assert.Equal(t, []string{"mgmt", "net1"}, slices.Sorted(maps.Keys(nets)))
	assert.Equal(t, []Refusal{{Reason: ReasonBadNetwork, Key: "nad:tenant/evil#evil#policy",
		Message: `ignoring network "evil" of nad:tenant/evil on this node: "nodeSubnets.pool" 10.96.0.0/12 is not allowed by rule "allowedSubnets" of /etc/cni/multi-bridge/policy.json, which allows [10.240.0.0/16]; use a value the node policy allows, or ask the cluster's administrator to extend the policy`}}, refused)
	assert.Empty(t, applyPolicy(policy.Default(), nets, routes.Foreign{}), "the default policy allows any pool")
}

// A NAD pool overlapping what the node reaches otherwise (its LAN, a route
// of its uplink, the default route's address space through a /0 pool) is
// not routed, unless the policy names it.
func TestApplyPolicyRefusesPoolsOverTheNodesNetworks(t *testing.T) {
	foreign := routes.Foreign{
		Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		Routes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("10.240.17.0/24"),
			netip.MustParsePrefix("10.250.0.0/16")},
		// This node's slice of net1, and another network's subnet on its
		// own bridge (a host-local network of tenant A).
		Bridges: []netip.Prefix{netip.MustParsePrefix("10.240.18.0/24"), netip.MustParsePrefix("10.241.0.0/16")},
	}
	nets := map[string]Network{
		"net1":  nad("default/net1", t0, "net1", "10.240.16.0/20", 24), // a route of one slice: RouteConflict's business
		"all":   nad("tenant/all", t0, "all", "0.0.0.0/0", 1),
		"lan":   nad("tenant/lan", t0, "lan", "192.0.2.0/25", 26),
		"route": nad("tenant/route", t0, "route", "203.0.113.128/25", 26),
		"wide":  nad("tenant/wide", t0, "wide", "10.250.0.0/15", 24), // contains a route of many slices
		"over":  nad("tenant/over", t0, "over", "10.241.0.0/16", 24), // over another network's bridge
		"mgmt":  file("--cni-config", "mgmt", "198.51.100.0/24", 26),
	}
	refused := applyPolicy(policy.Default(), nets, foreign)
	assert.Equal(t, []string{"mgmt", "net1"}, slices.Sorted(maps.Keys(nets)))
	var msgs []string
	for _, r := range refused {
		msgs = append(msgs, r.Message)
	}
	assert.Equal(t, []string{
		`ignoring network "all" of nad:tenant/all on this node: its pool 0.0.0.0/0 overlaps 192.0.2.0/24, a subnet of this node's own; give the network a pool of its own, or list the pool in the node policy's allowedSubnets`,
		`ignoring network "lan" of nad:tenant/lan on this node: its pool 192.0.2.0/25 overlaps 192.0.2.0/24, a subnet of this node's own; give the network a pool of its own, or list the pool in the node policy's allowedSubnets`,
		`ignoring network "over" of nad:tenant/over on this node: its pool 10.241.0.0/16 overlaps 10.241.0.0/16, the subnet of another network's bridge on this node; give the network a pool of its own, or list the pool in the node policy's allowedSubnets`,
		`ignoring network "route" of nad:tenant/route on this node: its pool 203.0.113.128/25 overlaps 203.0.113.0/24, a range this node routes; give the network a pool of its own, or list the pool in the node policy's allowedSubnets`,
		`ignoring network "wide" of nad:tenant/wide on this node: its pool 10.250.0.0/15 overlaps 10.250.0.0/16, a range this node routes; give the network a pool of its own, or list the pool in the node policy's allowedSubnets`,
	}, msgs)

	sanctioned, err := policy.Parse([]byte(`{"allowedSubnets":["203.0.113.0/24","10.240.0.0/16"]}`), "p.json")
	assert.NoError(t, err)
	nets = map[string]Network{"route": nad("tenant/route", t0, "route", "203.0.113.128/25", 26)}
	assert.Empty(t, applyPolicy(sanctioned, nets, foreign), "the administrator named the pool")
	assert.Len(t, nets, 1)
}
