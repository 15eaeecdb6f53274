package agent

import (
	"maps"
	"sync"
	"time"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/routes"
)

// Stats are the agent's counters and gauges, in one place so that health and
// metrics endpoints can serve them without reaching into the agent.
type Stats struct {
	// Networks the agent serves (with nodeSubnets).
	Networks int
	// LeasesHeld is the number of networks for which this node holds its
	// slice (leased, or from its podCIDR).
	LeasesHeld int
	// RoutesProgrammed is the number of routes to other nodes present in
	// the kernel after the last reconcile.
	RoutesProgrammed int
	// Problems counts what the agent reports with Warning Events, by
	// reason: slices without a route (NotOnLink, ...; see
	// IsRouteProblem), exhausted pools, invalid or conflicting network
	// definitions.
	Problems map[string]int

	Reconciles      uint64
	ReconcileErrors uint64
	LastReconcile   time.Time
	// LastReconcileDuration is how long the last reconcile took.
	LastReconcileDuration time.Duration
	LastError             string

	RoutesAdded    uint64 // added or replaced, since start
	RoutesDeleted  uint64
	LeasesAcquired uint64 // new leases taken by this node
	LeasesReleased uint64 // of this node (pool changed) or of deleted nodes
	LeaseConflicts uint64 // slices another node took first
}

// stats guards Stats for concurrent readers.
type stats struct {
	mu sync.Mutex
	s  Stats
}

func (s *stats) update(f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.s)
}

func (s *stats) snapshot() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.s
	out.Problems = maps.Clone(s.s.Problems)
	return out
}

// IsRouteProblem reports whether a Problems reason means that another
// node's slice has no route on this node.
func IsRouteProblem(reason string) bool {
	switch reason {
	case string(routes.NotOnLink), string(routes.NoInternalIP), string(routes.Overlap), ReasonRouteConflict:
		return true
	}
	return false
}
