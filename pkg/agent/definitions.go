package agent

import (
	"cmp"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"
)

// Refusal is a network definition the agent does not use, and why. Each
// becomes a Warning Event on this node, a log line and a count in
// Stats.Problems.
type Refusal struct {
	// Reason is the Event reason: ReasonBadNetwork or ReasonNetworkConflict.
	Reason string
	// Key identifies the definition, so that a refusal that stays is
	// reported once.
	Key     string
	Message string
}

func invalidDefinition(key string, err error) Refusal {
	return Refusal{Reason: ReasonBadNetwork, Key: key, Message: "ignoring an invalid network definition: " + err.Error()}
}

// Established orders definitions the established one first: the node's own
// files before any NAD (--cni-config, then the conf dir's files in libcni's
// order), then NADs oldest first (creationTimestamp, then namespace/name).
// Every agent orders the same NADs alike, so all nodes agree on which
// definition of a network wins, and a NAD created later can never take a
// network over.
func Established(a, b Network) int {
	return cmp.Or(
		cmpBool(!a.FromFile(), !b.FromFile()),
		a.Created.Compare(b.Created),
		cmp.Compare(a.Source, b.Source),
	)
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// Resolve picks the networks to serve from their definitions, the
// established one first (Established):
//
//   - the established definition of a name wins; a later one that slices
//     differently is refused with ReasonNetworkConflict and never changes
//     what the network is, so it cannot make nodes release their leases
//     (definitions that slice alike are the same network);
//   - a network whose pool overlaps the pool of an established network is
//     refused too: both would lease the same addresses to different nodes.
func Resolve(defs []Network) (map[string]Network, []Refusal) {
	sorted := slices.Clone(defs)
	slices.SortStableFunc(sorted, Established)
	byName := map[string]Network{}
	var winners []Network // in established order
	var refused []Refusal
	for _, d := range sorted {
		first, ok := byName[d.Name]
		switch {
		case !ok:
			byName[d.Name] = d
			winners = append(winners, d)
		case !first.Same(d):
			refused = append(refused, conflict(first, d))
		}
	}
	out := map[string]Network{}
	var served []Network
	for _, w := range winners {
		if i := slices.IndexFunc(served, func(s Network) bool { return s.Pool.Overlaps(w.Pool) }); i >= 0 {
			refused = append(refused, overlap(served[i], w))
			continue
		}
		served = append(served, w)
		out[w.Name] = w
	}
	return out, refused
}

func conflict(established, later Network) Refusal {
	return Refusal{
		Reason: ReasonNetworkConflict,
		Key:    later.Source + "#" + later.Name,
		Message: fmt.Sprintf("ignoring %s: it defines network %q as %s, but the established definition %s as %s; "+
			"make it slice alike, rename its network or delete it",
			later.Source, later.Name, describeSlicing(later), established.Source, describeSlicing(established)),
	}
}

func overlap(established, later Network) Refusal {
	return Refusal{
		Reason: ReasonNetworkConflict,
		Key:    later.Source + "#" + later.Name + "#overlap",
		Message: fmt.Sprintf("ignoring network %q of %s: its pool %s overlaps pool %s of the established network %q of %s, "+
			"so both would lease the same addresses to different nodes; give it a pool of its own",
			later.Name, later.Source, later.Pool, established.Pool, established.Name, established.Source),
	}
}

// networks gathers the conf dir's and the NADs' definitions and resolves
// them, returning the ones it does not use with the reason.
func (a *Agent) networks() (map[string]Network, []Refusal) {
	defs := slices.Clone(a.fileNets)
	var refused []Refusal
	for _, err := range a.fileErrs {
		refused = append(refused, invalidDefinition(err.Error(), err))
	}
	if a.nadInformer != nil {
		for _, o := range a.nadInformer.GetStore().List() {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			nets, r := nadNetworks(u)
			defs = append(defs, nets...)
			refused = append(refused, r...)
		}
	}
	nets, conflicts := Resolve(defs)
	return nets, append(refused, conflicts...)
}

// nadNetworks are the networks a NAD defines.
func nadNetworks(u *unstructured.Unstructured) ([]Network, []Refusal) {
	raw, _, _ := unstructured.NestedString(u.Object, "spec", "config")
	if raw == "" {
		return nil, nil // a NAD without config names a file on the node
	}
	source := "nad:" + key(u)
	nets, err := ParseConfig([]byte(raw), source)
	if err != nil {
		return nil, []Refusal{invalidDefinition(source, err)}
	}
	for i := range nets {
		nets[i].Created = u.GetCreationTimestamp().Time.UTC()
	}
	return nets, nil
}

func key(obj any) string {
	k, _ := cache.MetaNamespaceKeyFunc(obj)
	return k
}
