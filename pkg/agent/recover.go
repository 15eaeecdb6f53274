package agent

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/utils"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/lease"
	"github.com/multi-bridge-cni/multi-bridge/pkg/nodesubnet"
)

// State is what outlives the agent and records how a network was sliced:
// the cluster's SubnetLeases, this node's node subnet files and its Node's
// podCIDRs. An agent that knows no valid version of a network's
// definitions (it started while they were invalid) recovers the network
// from it (Recover).
type State struct {
	// Node is this node's name.
	Node string
	// PodCIDRs are this node's Node.spec.podCIDRs.
	PodCIDRs []string
	// Leases are the cluster's SubnetLeases (the lease informer's cache).
	Leases []lease.Lease
	// SliceFile reads this node's node subnet file of a network: nil when
	// there is none, or none the agent wrote. Nil: no files.
	SliceFile func(network string) *nodesubnet.Lease
}

func (s State) sliceFile(network string) *nodesubnet.Lease {
	if s.SliceFile == nil {
		return nil
	}
	return s.SliceFile(network)
}

// Recovered is a network as the state that outlives the agent records it.
type Recovered struct {
	// Network has Name, Pool and Size or FromNodePodCIDR; its Source and
	// Created are the caller's.
	Network Network
	// RecordedBy says what recorded it ("this node's SubnetLease ...").
	RecordedBy string
}

// Recover returns network name as the state records it, or false when
// nothing records it. In this order:
//
//  1. the network has canonical SubnetLeases: its pool and slice size are
//     those of this node's lease (the lowest if it holds several, as
//     lease.Client.Acquire keeps), so that the node keeps it; without one,
//     those of this node's subnet file if a lease has them too (its pods
//     use that slice), else those most of the leases have (ties: the lowest
//     pool address, then the shortest prefixes), so that every node without a lease
//     decides alike;
//  2. no lease: this node's subnet file, if its slice is this node's
//     podCIDR: a fromNodePodCIDR network of the file's pool.
//
// A network whose leases are all gone and whose file is no podCIDR is not
// recovered: its slices are free, so it is as good as deleted.
func Recover(name string, file *nodesubnet.Lease, st State) (Recovered, bool) {
	if file != nil && (file.Network != name || file.Node != st.Node) {
		file = nil
	}
	var of []lease.Lease
	for _, l := range st.Leases {
		if l.Network == name && l.Canonical() && l.Pool.IsValid() && l.Subnet.IsValid() &&
			l.Subnet.Bits() >= l.Pool.Bits() && l.Pool.Contains(l.Subnet.Addr()) {
			of = append(of, l)
		}
	}
	leased := func(pool netip.Prefix, size int, by string) (Recovered, bool) {
		return Recovered{Network: Network{Name: name, Pool: pool.Masked(), Size: size}, RecordedBy: by}, true
	}
	if len(of) > 0 {
		var mine []lease.Lease
		for _, l := range of {
			if l.Node == st.Node {
				mine = append(mine, l)
			}
		}
		if len(mine) > 0 {
			l := slices.MinFunc(mine, func(a, b lease.Lease) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
			return leased(l.Pool, l.Subnet.Bits(), "this node's SubnetLease "+l.Name+" records it")
		}
		type slicing struct {
			pool netip.Prefix
			size int
		}
		count := map[slicing]int{}
		for _, l := range of {
			count[slicing{l.Pool.Masked(), l.Subnet.Bits()}]++
		}
		if file != nil {
			if n := count[slicing{file.Pool.Masked(), file.Subnet.Bits()}]; n > 0 {
				return leased(file.Pool, file.Subnet.Bits(), fmt.Sprintf("this node's node subnet file and %d of its %d SubnetLeases record it", n, len(of)))
			}
		}
		best := slices.MaxFunc(slices.Collect(maps.Keys(count)), func(a, b slicing) int {
			return cmp.Or(
				cmp.Compare(count[a], count[b]),
				-a.pool.Addr().Compare(b.pool.Addr()),
				-cmp.Compare(a.pool.Bits(), b.pool.Bits()),
				-cmp.Compare(a.size, b.size),
			)
		})
		return leased(best.pool, best.size, fmt.Sprintf("%d of its %d SubnetLeases record it", count[best], len(of)))
	}
	if file != nil {
		if p, ok := podCIDRIn(st.PodCIDRs, file.Pool); ok && p == file.Subnet {
			return Recovered{
				Network:    Network{Name: name, Pool: file.Pool.Masked(), FromNodePodCIDR: true},
				RecordedBy: "this node's node subnet file and podCIDR record it",
			}, true
		}
	}
	return Recovered{}, false
}

// NamedNetwork is the name of the network an invalid CNI configuration
// names: its top-level "name" as far as the JSON can be read (a file cut
// short still names its network), else fallback (a NAD's name: Multus
// names a configuration without a name after its NAD). "" when that is not
// a CNI network name either: the configuration names no network the agent
// can tell.
func NamedNetwork(raw []byte, fallback string) string {
	name := configName(raw)
	if name == "" {
		name = fallback
	}
	if name == "" || utils.ValidateNetworkName(name) != nil {
		return ""
	}
	return name
}

// configName reads the top-level "name" of a JSON object up to the first
// syntax error (the last one, as encoding/json keeps the last of duplicate
// keys).
func configName(raw []byte) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	name := ""
	for {
		t, err := dec.Token()
		if err != nil {
			return name
		}
		k, ok := t.(string)
		if !ok {
			return name // the closing '}'
		}
		if k == "name" {
			v, err := dec.Token()
			if s, ok := v.(string); err == nil && ok {
				name = s
				continue
			}
			return name
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return name
		}
	}
}
