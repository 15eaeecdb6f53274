package rules_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
	"github.com/multi-bridge-cni/multi-bridge/pkg/rules"
)

func defaultRoute(v6 bool) *types.Route {
	if v6 {
		return &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}
	}
	return &types.Route{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}
}

func attachments() map[string]rules.Attachment {
	v4 := rules.Address{Prefix: netip.MustParsePrefix("10.240.10.2/24"), Gateway: netip.MustParseAddr("10.240.10.1")}
	v6 := rules.Address{Prefix: netip.MustParsePrefix("fd00:10:240:10::2/64"), Gateway: netip.MustParseAddr("fd00:10:240:10::1")}
	extra := &types.Route{Dst: net.IPNet{IP: net.ParseIP("192.0.2.0"), Mask: net.CIDRMask(24, 32)}, GW: net.ParseIP("10.240.10.254")}
	return map[string]rules.Attachment{
		"ipv4": {IfName: "net1", LinkIndex: 3, Addresses: []rules.Address{v4},
			Routes: []*types.Route{defaultRoute(false)}, Table: 1, Priority: 101},
		"dual-stack": {IfName: "net1", LinkIndex: 3, Addresses: []rules.Address{v4, v6},
			Routes: []*types.Route{defaultRoute(false), defaultRoute(true), extra}, Table: 1, Priority: 101, DefaultInMain: true},
		"main-table": {IfName: "eth0", LinkIndex: 2, Addresses: []rules.Address{v4},
			Routes: []*types.Route{defaultRoute(false)}, Table: 0},
	}
}

// BenchmarkBuildPlan is the pure part of ADD's routes and rules steps (and
// of CHECK and DEL).
func BenchmarkBuildPlan(b *testing.B) {
	for name, a := range attachments() {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = rules.BuildPlan(a)
			}
		})
	}
}

// podWith is a pod that already has n policy-routed attachments (tables
// 100.., preferences 100..), plus the kernel's three rules.
func podWith(n int) rules.PodRules {
	pod := rules.PodRules{Owners: map[netip.Addr]string{}}
	for _, pref := range []int{0, 32766, 32767} {
		r := netlink.NewRule()
		r.Priority, r.Table = pref, 254
		pod.Rules = append(pod.Rules, *r)
	}
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, 240, byte(i), 2})
		pod.Rules = append(pod.Rules, rules.SourceRule(a, 100+i, 100+i))
		pod.Owners[a] = fmt.Sprintf("net%d", i+1)
	}
	return pod
}

// BenchmarkChoose picks the table and preference of a new attachment against
// the pod's rules: automatic (lowest free from 100) and explicit.
func BenchmarkChoose(b *testing.B) {
	ours := []netip.Addr{netip.MustParseAddr("10.240.200.2")}
	for _, n := range []int{0, 4, 32} {
		pod := podWith(n)
		for _, c := range []struct {
			name string
			req  config.Routing
		}{
			{"auto", config.Routing{Mode: config.RoutingAuto}},
			{"explicit", config.Routing{Mode: config.RoutingTable, Table: 1, Priority: 99}},
		} {
			b.Run(fmt.Sprintf("%s/%d-attachments", c.name, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := rules.Choose(c.req, "net9", ours, pod); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
