package agent

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	cnitypes "github.com/containernetworking/cni/pkg/types"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/routes"
	"github.com/multi-bridge-cni/multi-bridge/pkg/policy"
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

// Definition is one source of network definitions: a NAD, a file of the
// CNI conf dir or --cni-config.
type Definition struct {
	// Source is "nad:<namespace>/<name>", "file:<path>" or "--cni-config"
	// (Network.Source).
	Source string
	// UID is a NAD's; "" for the node's files.
	UID types.UID
	// Created is a NAD's creationTimestamp; zero for the node's files.
	Created time.Time
	// Nets are the networks of a valid definition.
	Nets []Network
	// Err says why the definition is invalid (or unreadable); nil: valid.
	Err error
	// Network is the network an invalid definition names (NamedNetwork),
	// "" when it cannot be told.
	Network string
}

// networks gathers the conf dir's and the NADs' definitions and resolves
// them, returning the ones it does not use with the reason. st is what
// outlives the agent, for the networks of invalid definitions.
func (a *Agent) networks(st State) (map[string]Network, []Refusal) {
	defs := slices.Clone(a.fileDefs)
	if a.nadInformer != nil {
		for _, o := range a.nadInformer.GetStore().List() {
			if u, ok := o.(*unstructured.Unstructured); ok {
				defs = append(defs, nadDefinition(u))
			}
		}
	}
	nets, refused := gather(defs, a.history, st)
	if a.confDirErr != nil {
		refused = append([]Refusal{invalidDefinition("file:"+a.opts.CNIConfDir, a.confDirErr)}, refused...)
	}
	pol, err := a.nodePolicy()
	if err != nil {
		refused = append(refused, Refusal{Reason: ReasonBadPolicy, Key: "policy", Message: "keeping the last readable node policy: " + err.Error()})
	}
	foreign, err := a.kernel.Foreign()
	if err != nil {
		// Without knowing the node's own networks no NAD pool can be
		// judged safe: serve the node's files only, until the next try.
		refused = append(refused, Refusal{Reason: ReasonBadNetwork, Key: "foreign", Message: "cannot read the node's addresses and routes: " + err.Error()})
		foreign.Addresses = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	return nets, append(refused, applyPolicy(pol, nets, foreign)...)
}

// nodePolicy reads the node policy, keeping the last readable one (at
// first the default) when the file is broken: a typo must not take every
// NAD network's routes away from the node.
func (a *Agent) nodePolicy() (*policy.Policy, error) {
	path := a.opts.PolicyFile
	if path == "" {
		path = policy.DefaultPath
	}
	p, err := policy.Load(path)
	if err == nil {
		a.policy = p
	}
	if a.policy == nil {
		a.policy = policy.Default()
	}
	return a.policy, err
}

// applyPolicy drops the NAD networks whose pool the node policy does not
// allow, or that would take traffic from the node's own networks, unless
// the policy's allowedSubnets name the pool:
//
//   - a pool overlapping an address of the node (its LAN inside the pool,
//     or the pool inside its LAN): the agent would route slices of it to
//     other nodes;
//   - a pool inside a route of the node (a range its uplink reaches), or
//     containing such a route wider than one slice: slices would take parts
//     of that range over. A route of one slice or narrower is the route
//     reconciler's business: it reports the slice (RouteConflict) and leaves
//     the route alone.
//
// The node's own files are the administrator's and always count.
func applyPolicy(p *policy.Policy, nets map[string]Network, foreign routes.Foreign) []Refusal {
	var refused []Refusal
	refuse := func(n Network, key, why string) {
		refused = append(refused, Refusal{Reason: ReasonBadNetwork, Key: n.Source + "#" + n.Name + "#" + key,
			Message: fmt.Sprintf("ignoring network %q of %s on this node: %s", n.Name, n.Source, why)})
		delete(nets, n.Name)
	}
	for _, n := range nets {
		if n.FromFile() {
			continue
		}
		if err := p.CheckPool(n.Pool); err != nil {
			refuse(n, "policy", cniMessage(err))
			continue
		}
		if p.Sanctions(n.Pool) {
			continue
		}
		if clash, what, ok := takesOver(n, foreign); ok {
			refuse(n, "foreign", fmt.Sprintf("its pool %s overlaps %s, %s; "+
				"give the network a pool of its own, or list the pool in the node policy's allowedSubnets", n.Pool, clash, what))
		}
	}
	slices.SortFunc(refused, func(a, b Refusal) int { return strings.Compare(a.Key, b.Key) })
	return refused
}

// takesOver is the first of the node's own prefixes n's slices would take
// traffic from (applyPolicy).
func takesOver(n Network, foreign routes.Foreign) (clash netip.Prefix, what string, ok bool) {
	if i := slices.IndexFunc(foreign.Addresses, n.Pool.Overlaps); i >= 0 {
		return foreign.Addresses[i], "a subnet of this node's own", true
	}
	// On multi-bridge's bridges, a subnet of one slice or narrower inside
	// the pool is this network's own slice (or one the route reconciler
	// never routes over: a connected route of the same prefix blocks it);
	// anything else there is another network's subnet.
	for _, b := range foreign.Bridges {
		own := n.Pool.Contains(b.Addr()) && b.Bits() >= n.Pool.Bits() && (n.FromNodePodCIDR || b.Bits() >= n.Size)
		if b.Overlaps(n.Pool) && !own {
			return b, "the subnet of another network's bridge on this node", true
		}
	}
	for _, r := range foreign.Routes {
		switch {
		case r.Bits() <= n.Pool.Bits() && r.Contains(n.Pool.Addr()),
			r.Bits() > n.Pool.Bits() && n.Pool.Contains(r.Addr()) && (n.FromNodePodCIDR || r.Bits() < n.Size):
			return r, "a range this node routes", true
		}
	}
	return netip.Prefix{}, "", false
}

// cniMessage is a CNI error's message with its advice.
func cniMessage(err error) string {
	var e *cnitypes.Error
	if errors.As(err, &e) && e.Details != "" {
		return e.Msg + "; " + e.Details
	}
	return err.Error()
}

// gather resolves the definitions' networks. An invalid definition
// contributes
//
//   - the networks of its last valid version, if the agent saw it valid
//     (h, which gather updates; a NAD must be the same object: same UID),
//     so that an invalid edit does not take its networks away from every
//     node;
//   - else, if no valid definition of the network it names comes before it
//     (Established), that network as the state that outlives the agent
//     records it (Recover), in its place: an agent started while the
//     definition is invalid keeps serving the network as the agents that
//     saw it valid do, and a newer definition of another pool cannot take
//     it over;
//   - else nothing.
func gather(defs []Definition, h history, st State) (map[string]Network, []Refusal) {
	var use []Network
	var refused []Refusal
	var unknown []Definition // invalid, and no valid version known
	present := map[string]bool{}
	for _, d := range defs {
		present[d.Source] = true
		nets, known := h.use(d)
		switch {
		case d.Err == nil:
		case known && len(nets) > 0:
			refused = append(refused, keptDefinition(d.Source, nets, d.Err))
		case known:
			refused = append(refused, invalidDefinition(d.Source, d.Err))
		default:
			unknown = append(unknown, d)
		}
		use = append(use, nets...)
	}
	h.prune(present)
	var recovered []Network
	for _, d := range unknown {
		n, r, ok := recoverDefinition(d, use, st)
		refused = append(refused, r)
		if ok {
			recovered = append(recovered, n)
		}
	}
	nets, conflicts := Resolve(append(use, recovered...))
	return nets, append(refused, conflicts...)
}

// recoverDefinition stands in for an invalid definition the agent knows no
// valid version of: the network it names as the state records it, with
// the definition's place in the order (Source, Created). It does not when
// a valid definition of that network comes first anyway.
func recoverDefinition(d Definition, valid []Network, st State) (Network, Refusal, bool) {
	if d.Network == "" {
		return Network{}, invalidDefinition(d.Source, d.Err), false
	}
	at := Network{Name: d.Network, Source: d.Source, Created: d.Created}
	if slices.ContainsFunc(valid, func(v Network) bool { return v.Name == d.Network && Established(v, at) < 0 }) {
		return Network{}, invalidDefinition(d.Source, d.Err), false
	}
	r, ok := Recover(d.Network, st.sliceFile(d.Network), st)
	if !ok {
		return Network{}, invalidDefinition(d.Source, d.Err), false
	}
	n := r.Network
	n.Source, n.Created = d.Source, d.Created
	return n, Refusal{Reason: ReasonBadNetwork, Key: d.Source, Message: fmt.Sprintf(
		"keeping network %s (%s, as %s) while %s, which names it, is invalid and no valid version of it is known to this agent: %v",
		n.Name, describeSlicing(n), r.RecordedBy, d.Source, d.Err)}, true
}

func keptDefinition(source string, kept []Network, err error) Refusal {
	var what []string
	for _, n := range kept {
		what = append(what, fmt.Sprintf("network %s: %s", n.Name, describeSlicing(n)))
	}
	return Refusal{Reason: ReasonBadNetwork, Key: source, Message: fmt.Sprintf(
		"keeping the last valid definition of %s (%s) while it is invalid: %v", source, strings.Join(what, "; "), err)}
}

// nadDefinition is what a NAD defines.
func nadDefinition(u *unstructured.Unstructured) Definition {
	d := Definition{Source: "nad:" + key(u), UID: u.GetUID(), Created: u.GetCreationTimestamp().Time.UTC()}
	raw, _, _ := unstructured.NestedString(u.Object, "spec", "config")
	if raw == "" {
		return d // a NAD without config names a file on the node
	}
	nets, err := ParseConfig([]byte(raw), d.Source)
	if err != nil {
		d.Err, d.Network = err, NamedNetwork([]byte(raw), u.GetName())
		return d
	}
	for i := range nets {
		nets[i].Created = d.Created
	}
	d.Nets = nets
	return d
}

// fileDefinition is what a file of the node (a CNI configuration) defines.
func fileDefinition(raw []byte, source string) Definition {
	nets, err := ParseConfig(raw, source)
	if err != nil {
		return Definition{Source: source, Err: err, Network: NamedNetwork(raw, "")}
	}
	return Definition{Source: source, Nets: nets}
}

// history holds each definition's networks of its last valid version, by
// Source. It lives as long as the agent: an agent started while a
// definition is invalid does not know what it was (gather recovers its
// network from the state that outlives the agent instead).
type history map[string]lastValid

type lastValid struct {
	uid  types.UID
	nets []Network
}

// use returns the networks a definition contributes: its own when it is
// valid (remembered), else those of its last valid version if it is still
// the same object (same UID: a NAD not deleted and re-created since).
// known reports whether the agent knows what the definition contributes:
// false for an invalid definition it never saw valid.
func (h history) use(d Definition) (use []Network, known bool) {
	if d.Err == nil {
		h[d.Source] = lastValid{uid: d.UID, nets: d.Nets}
		return d.Nets, true
	}
	last, ok := h[d.Source]
	if !ok || last.uid != d.UID {
		return nil, false
	}
	return last.nets, true
}

// prune forgets definitions that are gone: deleting a NAD (or a file)
// deletes its networks.
func (h history) prune(present map[string]bool) {
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
