package health

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, err := io.ReadAll(rec.Result().Body)
	require.NoError(t, err)
	return rec.Code, string(body)
}

func TestProbes(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name            string
		stats           agent.Stats
		healthz, readyz int
		readyBody       string
	}{
		{"starting", agent.Stats{}, 200, 503, "not reconciled yet"},
		{"ready", agent.Stats{Networks: 3, LeasesHeld: 3, RoutesProgrammed: 6, Reconciles: 4, LastReconcile: now.Add(-10 * time.Second)}, 200, 200, "ok: 3 of 3 networks leased, 6 routes"},
		{"API down", agent.Stats{Reconciles: 9, ReconcileErrors: 2, LastReconcile: now.Add(-time.Second), LastError: "connection refused"}, 200, 503, "last reconcile failed: connection refused"},
		{"stuck loop", agent.Stats{Reconciles: 9, LastReconcile: now.Add(-2 * time.Minute)}, 503, 200, "ok: 0 of 0 networks leased"},
	}
	for _, c := range cases {
		h := Handler(func() agent.Stats { return c.stats }, 30*time.Second, func() time.Time { return now })
		code, _ := get(t, h, "/healthz")
		assert.Equal(t, c.healthz, code, c.name)
		code, body := get(t, h, "/readyz")
		assert.Equal(t, c.readyz, code, c.name)
		assert.Contains(t, body, c.readyBody, c.name)
	}
}

func TestMetrics(t *testing.T) {
	last := time.Unix(1796306400, 500_000_000)
	h := Handler(func() agent.Stats {
		return agent.Stats{Networks: 3, LeasesHeld: 2, RoutesProgrammed: 5, Problems: map[string]int{"NotOnLink": 1, "InvalidNetworkConfig": 2},
			Reconciles: 7, ReconcileErrors: 1, LastReconcile: last, LastReconcileDuration: 1500 * time.Millisecond,
			RoutesAdded: 6, RoutesDeleted: 1, LeasesAcquired: 2, LeaseConflicts: 1}
	}, 30*time.Second, nil)
	code, body := get(t, h, "/metrics")
	require.Equal(t, 200, code)
	for _, want := range []string{
		"multi_bridge_agent_networks 3",
		"multi_bridge_agent_leases_held 2",
		"multi_bridge_agent_routes_programmed 5",
		`multi_bridge_agent_slices_without_route{reason="NotOnLink"} 1`,
		`multi_bridge_agent_problems{reason="NotOnLink"} 1`,
		`multi_bridge_agent_problems{reason="InvalidNetworkConfig"} 2`,
		"multi_bridge_agent_reconciles_total 7",
		"multi_bridge_agent_reconcile_errors_total 1",
		"multi_bridge_agent_last_reconcile_timestamp_seconds 1.7963064005e+09",
		"multi_bridge_agent_last_reconcile_duration_seconds 1.5",
		"multi_bridge_agent_routes_added_total 6",
		"multi_bridge_agent_lease_conflicts_total 1",
		"process_resident_memory_bytes",
	} {
		assert.True(t, strings.Contains(body, want+"\n") || strings.Contains(body, want), "missing %q", want)
	}
	assert.NotContains(t, body, `multi_bridge_agent_slices_without_route{reason="InvalidNetworkConfig"}`, "a bad definition is no slice without a route")
}
