// Package health serves the node agent's probes and metrics over HTTP:
//
//	/healthz  liveness: the reconcile loop is turning (a stuck loop gets the
//	          agent restarted; an unreachable API server does not, since a
//	          restart would not help);
//	/readyz   readiness: the last reconcile succeeded, so this node's slices
//	          are leased and its routes programmed;
//	/metrics  Prometheus: leases held, routes programmed, reconciles, errors,
//	          the time of the last reconcile, problems by reason (all of
//	          them, and those of slices without a route).
//
// Everything is read from agent.Stats at request time.
package health

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent"
)

// StatsFunc returns the agent's current counters.
type StatsFunc func() agent.Stats

// Handler serves the three endpoints. resync is the agent's resync period:
// a loop that has not reconciled for three of them is stuck.
func Handler(stats StatsFunc, resync time.Duration, now func() time.Time) http.Handler {
	if now == nil {
		now = time.Now
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{stats: stats}, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		s := stats()
		if s.Reconciles > 0 {
			if idle := now().Sub(s.LastReconcile); idle > 3*resync {
				http.Error(w, fmt.Sprintf("no reconcile for %s (resync every %s)", idle.Round(time.Second), resync), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		s := stats()
		switch {
		case s.Reconciles == 0:
			http.Error(w, "not reconciled yet", http.StatusServiceUnavailable)
		case s.LastError != "":
			http.Error(w, "last reconcile failed: "+s.LastError, http.StatusServiceUnavailable)
		default:
			fmt.Fprintf(w, "ok: %d of %d networks leased, %d routes\n", s.LeasesHeld, s.Networks, s.RoutesProgrammed)
			// Problems of single networks (a pool exhausted, a node on
			// another segment) are reported, not made the agent's: a
			// DaemonSet rollout must not stall on one bad network.
			for reason, n := range s.Problems {
				fmt.Fprintf(w, "problem: %s x%d\n", reason, n)
			}
		}
	})
	return mux
}

const namespace = "multi_bridge_agent"

var (
	descNetworks        = prometheus.NewDesc(namespace+"_networks", "Networks with nodeSubnets this agent serves.", nil, nil)
	descLeases          = prometheus.NewDesc(namespace+"_leases_held", "Networks for which this node holds its slice.", nil, nil)
	descRoutes          = prometheus.NewDesc(namespace+"_routes_programmed", "Routes to other nodes' slices in the kernel after the last reconcile.", nil, nil)
	descProblems        = prometheus.NewDesc(namespace+"_problems", "Problems this agent reports as Warning Events, by reason (invalid or conflicting network definitions, exhausted pools, slices without a route...).", []string{"reason"}, nil)
	descNoRoute         = prometheus.NewDesc(namespace+"_slices_without_route", "Other nodes' slices with no route, by reason.", []string{"reason"}, nil)
	descReconciles      = prometheus.NewDesc(namespace+"_reconciles_total", "Reconciles run.", nil, nil)
	descReconcileErrors = prometheus.NewDesc(namespace+"_reconcile_errors_total", "Reconciles that failed.", nil, nil)
	descLastReconcile   = prometheus.NewDesc(namespace+"_last_reconcile_timestamp_seconds", "Unix time of the last reconcile.", nil, nil)
	descLastDuration    = prometheus.NewDesc(namespace+"_last_reconcile_duration_seconds", "Duration of the last reconcile.", nil, nil)
	descRoutesAdded     = prometheus.NewDesc(namespace+"_routes_added_total", "Routes added or replaced.", nil, nil)
	descRoutesDeleted   = prometheus.NewDesc(namespace+"_routes_deleted_total", "Routes deleted.", nil, nil)
	descLeasesAcquired  = prometheus.NewDesc(namespace+"_leases_acquired_total", "Slices leased by this node.", nil, nil)
	descLeasesReleased  = prometheus.NewDesc(namespace+"_leases_released_total", "Leases released (this node's after a pool change, deleted nodes').", nil, nil)
	descLeaseConflicts  = prometheus.NewDesc(namespace+"_lease_conflicts_total", "Slices another node leased first.", nil, nil)
)

// collector turns one Stats snapshot into metrics at scrape time.
type collector struct{ stats StatsFunc }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNetworks, descLeases, descRoutes, descProblems, descNoRoute, descReconciles, descReconcileErrors,
		descLastReconcile, descLastDuration, descRoutesAdded, descRoutesDeleted, descLeasesAcquired, descLeasesReleased, descLeaseConflicts} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descNetworks, float64(s.Networks))
	gauge(descLeases, float64(s.LeasesHeld))
	gauge(descRoutes, float64(s.RoutesProgrammed))
	for reason, n := range s.Problems {
		gauge(descProblems, float64(n), reason)
		if agent.IsRouteProblem(reason) {
			gauge(descNoRoute, float64(n), reason)
		}
	}
	counter(descReconciles, s.Reconciles)
	counter(descReconcileErrors, s.ReconcileErrors)
	if !s.LastReconcile.IsZero() {
		gauge(descLastReconcile, float64(s.LastReconcile.UnixNano())/1e9)
		gauge(descLastDuration, s.LastReconcileDuration.Seconds())
	}
	counter(descRoutesAdded, s.RoutesAdded)
	counter(descRoutesDeleted, s.RoutesDeleted)
	counter(descLeasesAcquired, s.LeasesAcquired)
	counter(descLeasesReleased, s.LeasesReleased)
	counter(descLeaseConflicts, s.LeaseConflicts)
}
