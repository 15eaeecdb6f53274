package agent

import (
	"slices"
	"sort"

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

// networks merges the conf dir's and the NADs' definitions, returning the
// ones it does not use with the reason.
func (a *Agent) networks() (map[string]Network, []Refusal) {
	defs := slices.Clone(a.fileNets)
	var refused []Refusal
	for _, err := range a.fileErrs {
		refused = append(refused, invalidDefinition(err.Error(), err))
	}
	if a.nadInformer != nil {
		objs := a.nadInformer.GetStore().List()
		sort.Slice(objs, func(i, j int) bool { return key(objs[i]) < key(objs[j]) })
		for _, o := range objs {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			raw, _, _ := unstructured.NestedString(u.Object, "spec", "config")
			if raw == "" {
				continue // a NAD without config names a file on the node
			}
			source := "nad:" + key(o)
			ns, err := ParseConfig([]byte(raw), source)
			if err != nil {
				refused = append(refused, invalidDefinition(source, err))
				continue
			}
			defs = append(defs, ns...)
		}
	}
	nets, conflicts := Merge(defs)
	for _, c := range conflicts {
		refused = append(refused, Refusal{Reason: ReasonBadNetwork, Key: c, Message: c})
	}
	return nets, refused
}

func key(obj any) string {
	k, _ := cache.MetaNamespaceKeyFunc(obj)
	return k
}
