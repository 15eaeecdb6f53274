// Package lease leases each node one slice of a network's pool through the
// Kubernetes API: one cluster-scoped SubnetLease object
// (multi-bridge.cni.dev/v1alpha1) per leased slice.
//
// # Why one object per slice, and not a Node annotation
//
// The guarantee needed is global: no two nodes may ever hold overlapping
// slices of one network. An annotation on each Node is protected by that
// Node's resourceVersion only: two agents that pick the same free slice at
// the same time each update their OWN Node, both updates succeed, and
// neither can detect the clash. Optimistic concurrency on one shared object
// (a ConfigMap holding all leases) would work but serialises every node of
// the cluster on one object, which grows with the cluster and conflicts on
// every join. A SubnetLease named after its slice (Name) turns "take this
// slice" into Create: the API server stores an object only if no object of
// that name exists (etcd compares the key's create revision in the same
// transaction), so of two agents creating the same slice exactly one
// succeeds, the other gets AlreadyExists and moves on to the next free
// slice. The store needs no lock, no leader and no retry loop on a hot
// object, and `kubectl get subnetleases` shows who holds what.
//
// The spec of a lease never changes (the CRD makes it immutable); the only
// update is the owner reference when a Node is re-created under the same
// name (Adopt). Every update and delete carries the object's UID and
// resourceVersion as preconditions, so an agent acting on a stale view never
// removes or rewrites a lease that someone else changed meanwhile.
package lease

import (
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// The API of the SubnetLease custom resource (deploy/crds/subnetlease.yaml).
const (
	Group    = "multi-bridge.cni.dev"
	Version  = "v1alpha1"
	Resource = "subnetleases"
	Kind     = "SubnetLease"

	// LabelNetwork and LabelNode select the leases of a network or node
	// (values through LabelValue).
	LabelNetwork = Group + "/network"
	LabelNode    = Group + "/node"
)

// GVR is the resource of SubnetLeases for the dynamic client.
func GVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}
}

// Lease is one leased slice: node Node holds Subnet of network Network,
// whose pool was Pool when it was leased.
type Lease struct {
	Network string
	Node    string
	Pool    netip.Prefix
	Subnet  netip.Prefix

	// Set on leases read from the API server.
	Name            string
	UID             types.UID
	ResourceVersion string
	// OwnerUID is the UID of the Node in the owner reference, if any.
	OwnerUID types.UID
}

func (l Lease) String() string {
	return fmt.Sprintf("%s (%s of network %q for node %q)", l.Name, l.Subnet, l.Network, l.Node)
}

// Canonical reports whether the object's name is the one Name gives for its
// spec. Only canonical leases are guarded by name uniqueness; others (made by
// hand) are never routed, but still count as used when choosing a slice.
func (l Lease) Canonical() bool { return l.Name == Name(l.Network, l.Subnet) }

// Object is the lease as an API object, owned by the Node with nodeUID (the
// garbage collector of a real cluster deletes it with the Node).
func (l Lease) Object(nodeUID types.UID) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": Group + "/" + Version,
		"kind":       Kind,
		"spec": map[string]any{
			"network": l.Network,
			"node":    l.Node,
			"pool":    l.Pool.String(),
			"subnet":  l.Subnet.String(),
		},
	}}
	u.SetName(Name(l.Network, l.Subnet))
	u.SetLabels(map[string]string{LabelNetwork: LabelValue(l.Network), LabelNode: LabelValue(l.Node)})
	if nodeUID != "" {
		u.SetOwnerReferences([]metav1.OwnerReference{NodeOwner(l.Node, nodeUID)})
	}
	return u
}

// NodeOwner is the owner reference to a Node.
func NodeOwner(node string, uid types.UID) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: node, UID: uid}
}

// FromObject reads a lease from an API object as informers deliver it
// (tombstones of deleted objects included).
func FromObject(obj any) (Lease, error) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return Lease{}, fmt.Errorf("not a SubnetLease object: %T", obj)
	}
	spec, _, _ := unstructured.NestedStringMap(u.Object, "spec")
	l := Lease{
		Network:         spec["network"],
		Node:            spec["node"],
		Name:            u.GetName(),
		UID:             u.GetUID(),
		ResourceVersion: u.GetResourceVersion(),
	}
	for _, o := range u.GetOwnerReferences() {
		if o.Kind == "Node" && o.APIVersion == "v1" && o.Name == l.Node {
			l.OwnerUID = o.UID
		}
	}
	var err error
	if l.Pool, err = netip.ParsePrefix(spec["pool"]); err != nil {
		return l, fmt.Errorf("SubnetLease %s: spec.pool %q: %w", l.Name, spec["pool"], err)
	}
	if l.Subnet, err = netip.ParsePrefix(spec["subnet"]); err != nil {
		return l, fmt.Errorf("SubnetLease %s: spec.subnet %q: %w", l.Name, spec["subnet"], err)
	}
	if l.Network == "" || l.Node == "" {
		return l, fmt.Errorf("SubnetLease %s: spec.network and spec.node must be set", l.Name)
	}
	return l, nil
}

// StripManagedFields is an informer transform that drops what the agent
// never reads, to keep the cache small in large clusters.
func StripManagedFields(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		u.SetManagedFields(nil)
	}
	return obj, nil
}
