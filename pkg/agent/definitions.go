package agent

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
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
	var nads []*unstructured.Unstructured
	if a.nadInformer != nil {
		for _, o := range a.nadInformer.GetStore().List() {
			if u, ok := o.(*unstructured.Unstructured); ok {
				nads = append(nads, u)
			}
		}
	}
	return gather(a.fileNets, a.fileErrs, nads, a.nadLast)
}

// gather resolves the node's files' networks (and the errors of invalid
// files) and the NADs' networks. An invalid NAD contributes the networks of
// its last valid version (from h, which it updates), so that an invalid
// edit of a live NAD does not take its network away from every node.
func gather(fileNets []Network, fileErrs []error, nads []*unstructured.Unstructured, h nadHistory) (map[string]Network, []Refusal) {
	defs := slices.Clone(fileNets)
	var refused []Refusal
	for _, err := range fileErrs {
		refused = append(refused, invalidDefinition(err.Error(), err))
	}
	present := map[string]bool{}
	for _, u := range nads {
		k := key(u)
		present[k] = true
		nets, err := nadNetworks(u)
		use, kept := h.use(k, u.GetUID(), nets, err)
		switch {
		case err != nil && kept:
			refused = append(refused, keptDefinition("nad:"+k, use, err))
		case err != nil:
			refused = append(refused, invalidDefinition("nad:"+k, err))
		}
		defs = append(defs, use...)
	}
	h.prune(present)
	nets, conflicts := Resolve(defs)
	return nets, append(refused, conflicts...)
}

func keptDefinition(source string, kept []Network, err error) Refusal {
	var what []string
	for _, n := range kept {
		what = append(what, fmt.Sprintf("network %s: %s", n.Name, describeSlicing(n)))
	}
	return Refusal{Reason: ReasonBadNetwork, Key: source, Message: fmt.Sprintf(
		"keeping the last valid definition of %s (%s) while it is invalid: %v", source, strings.Join(what, "; "), err)}
}

// nadNetworks are the networks a NAD defines.
func nadNetworks(u *unstructured.Unstructured) ([]Network, error) {
	raw, _, _ := unstructured.NestedString(u.Object, "spec", "config")
	if raw == "" {
		return nil, nil // a NAD without config names a file on the node
	}
	nets, err := ParseConfig([]byte(raw), "nad:"+key(u))
	if err != nil {
		return nil, err
	}
	for i := range nets {
		nets[i].Created = u.GetCreationTimestamp().Time.UTC()
	}
	return nets, nil
}

// nadHistory holds each NAD's networks of its last valid version, by
// namespace/name. It lives as long as the agent: an agent started while a
// NAD is invalid does not know what it was.
type nadHistory map[string]lastValid

type lastValid struct {
	uid  types.UID
	nets []Network
}

// use returns the networks a NAD contributes: nets when it is valid (err
// nil; remembered), else those of its last valid version if it is still
// the same object (same UID: not deleted and re-created since). kept
// reports the latter.
func (h nadHistory) use(key string, uid types.UID, nets []Network, err error) (use []Network, kept bool) {
	if err == nil {
		h[key] = lastValid{uid: uid, nets: nets}
		return nets, false
	}
	last, ok := h[key]
	if !ok || last.uid != uid || len(last.nets) == 0 {
		return nil, false
	}
	return last.nets, true
}

// prune forgets NADs that are gone: deleting a NAD deletes its networks.
func (h nadHistory) prune(present map[string]bool) {
	for k := range h {
		if !present[k] {
			delete(h, k)
		}
	}
}

func key(obj any) string {
	k, _ := cache.MetaNamespaceKeyFunc(obj)
	return k
}
