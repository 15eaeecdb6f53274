package lease

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// Client reads and writes SubnetLeases.
type Client struct {
	res dynamic.NamespaceableResourceInterface
}

// NewClient returns a client using dyn.
func NewClient(dyn dynamic.Interface) *Client {
	return &Client{res: dyn.Resource(GVR())}
}

// ErrChanged means a precondition failed: the lease was deleted or changed
// since it was read. Read it again before deciding anything.
var ErrChanged = errors.New("lease changed since it was read")

// List returns the leases matching the label selector, read from etcd (not a
// cache), so a decision based on it sees every lease created before the call.
// Objects that are not valid leases are returned in bad.
func (c *Client) List(ctx context.Context, selector labels.Set) (leases []Lease, bad []error, err error) {
	list, err := c.res.List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(selector).String()})
	if err != nil {
		return nil, nil, fmt.Errorf("listing SubnetLeases (%s): %w", labels.SelectorFromSet(selector), err)
	}
	for i := range list.Items {
		l, err := FromObject(&list.Items[i])
		if err != nil {
			bad = append(bad, err)
			continue
		}
		leases = append(leases, l)
	}
	return leases, bad, nil
}

// Create takes the slice of l. It returns an error satisfying
// apierrors.IsAlreadyExists when the slice is taken.
func (c *Client) Create(ctx context.Context, l Lease, nodeUID types.UID) (Lease, error) {
	u, err := c.res.Create(ctx, l.Object(nodeUID), metav1.CreateOptions{})
	if err != nil {
		return Lease{}, err
	}
	return FromObject(u)
}

// Delete releases l if it is still exactly the object that was read (same
// UID and resourceVersion). An already deleted lease is not an error;
// ErrChanged means it changed since.
func (c *Client) Delete(ctx context.Context, l Lease) error {
	_, err := c.Release(ctx, l)
	return err
}

// Release is Delete that also tells whether this call deleted the object
// (false: it was already gone).
func (c *Client) Release(ctx context.Context, l Lease) (bool, error) {
	pre := metav1.Preconditions{UID: &l.UID, ResourceVersion: &l.ResourceVersion}
	err := c.res.Delete(ctx, l.Name, metav1.DeleteOptions{Preconditions: &pre})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	case apierrors.IsConflict(err):
		return false, fmt.Errorf("releasing %s: %w", l, ErrChanged)
	default:
		return false, fmt.Errorf("releasing %s: %w", l, err)
	}
}

// Adopt points l's owner reference at the Node with nodeUID (a Node deleted
// and re-created under the same name has a new UID). The update carries l's
// resourceVersion: ErrChanged when the lease changed or went meanwhile.
func (c *Client) Adopt(ctx context.Context, l Lease, nodeUID types.UID) (Lease, error) {
	u, err := c.res.Get(ctx, l.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Lease{}, fmt.Errorf("adopting %s: %w", l, ErrChanged)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("adopting %s: %w", l, err)
	}
	if u.GetUID() != l.UID || u.GetResourceVersion() != l.ResourceVersion {
		return Lease{}, fmt.Errorf("adopting %s: %w", l, ErrChanged)
	}
	u.SetOwnerReferences([]metav1.OwnerReference{NodeOwner(l.Node, nodeUID)})
	u, err = c.res.Update(ctx, u, metav1.UpdateOptions{})
	switch {
	case apierrors.IsConflict(err), apierrors.IsNotFound(err):
		return Lease{}, fmt.Errorf("adopting %s: %w", l, ErrChanged)
	case err != nil:
		return Lease{}, fmt.Errorf("adopting %s: %w", l, err)
	}
	return FromObject(u)
}

// Request asks for a slice of Pool of length Size of Network for Node.
type Request struct {
	Network string
	Pool    netip.Prefix
	Size    int
	Node    string
	NodeUID types.UID
	// Prefer is the slice to take when the node holds no lease that fits
	// and it is free: the one the node had (see Choose). Zero: none.
	Prefer netip.Prefix
}

// Fits reports whether l is a lease this request can keep: the same
// network and node, a slice of the right length inside the pool.
func (r Request) Fits(l Lease) bool {
	return l.Network == r.Network && l.Node == r.Node && l.Canonical() &&
		l.Subnet.Bits() == r.Size && r.Pool.Contains(l.Subnet.Addr()) && l.Subnet.Addr().Is4() == r.Pool.Addr().Is4()
}

// Outcome is what Acquire did.
type Outcome struct {
	Lease Lease
	// Kept is true when the node already held the lease (agent restart).
	Kept bool
	// Released are leases of the node it gave back: of an older pool or
	// size, or duplicates.
	Released []Lease
	// Collisions counts slices another node took between List and Create.
	Collisions int
}

// Acquire returns the node's lease for the request: the one it already
// holds (so a lease survives agent restarts), else r.Prefer if it is free,
// else the first free slice of the pool. It gives back the node's leases of the network that no longer
// fit (the pool or size changed). Races with other agents are settled by
// Create: on AlreadyExists the slice is marked used and the next one tried,
// so the loop ends after at most as many attempts as the pool has slices.
// A full pool gives an *ExhaustedError.
func (c *Client) Acquire(ctx context.Context, r Request) (Outcome, error) {
	var out Outcome
	mine, _, err := c.List(ctx, labels.Set{LabelNetwork: LabelValue(r.Network), LabelNode: LabelValue(r.Node)})
	if err != nil {
		return out, err
	}
	// Lowest slice first, so a node that somehow holds two keeps the same
	// one every time.
	sort.Slice(mine, func(i, j int) bool { return mine[i].Subnet.Addr().Less(mine[j].Subnet.Addr()) })
	var keep *Lease
	for i := range mine {
		l := mine[i]
		if l.Network != r.Network || l.Node != r.Node {
			continue // a label hash collision: not ours
		}
		if keep == nil && r.Fits(l) {
			keep = &mine[i]
			continue
		}
		if !l.Canonical() {
			continue // made by hand: not ours to delete
		}
		if err := c.Delete(ctx, l); err != nil {
			return out, err
		}
		out.Released = append(out.Released, l)
	}
	if keep != nil {
		out.Lease, out.Kept = *keep, true
		if r.NodeUID != "" && keep.OwnerUID != r.NodeUID {
			if out.Lease, err = c.Adopt(ctx, *keep, r.NodeUID); err != nil {
				return out, err
			}
		}
		return out, nil
	}

	all, _, err := c.List(ctx, labels.Set{LabelNetwork: LabelValue(r.Network)})
	if err != nil {
		return out, err
	}
	var used []netip.Prefix
	leased := 0
	for _, l := range all {
		if l.Network != r.Network {
			continue
		}
		used = append(used, l.Subnet)
		if r.Pool.Overlaps(l.Subnet) {
			leased++
		}
	}
	for {
		slice, ok := Choose(r.Pool, r.Size, r.Prefer, used)
		if !ok {
			return out, &ExhaustedError{Network: r.Network, Node: r.Node, Pool: r.Pool, Size: r.Size, Leased: leased}
		}
		l, err := c.Create(ctx, Lease{Network: r.Network, Node: r.Node, Pool: r.Pool, Subnet: slice}, r.NodeUID)
		if apierrors.IsAlreadyExists(err) {
			used = append(used, slice)
			leased++
			out.Collisions++
			continue
		}
		if err != nil {
			return out, fmt.Errorf("creating SubnetLease %s: %w", Name(r.Network, slice), err)
		}
		out.Lease = l
		return out, nil
	}
}
