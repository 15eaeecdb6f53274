package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/lease"
	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/routes"
	"github.com/multi-bridge-cni/multi-bridge/test/kubetest"
	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// benchNets are three networks sliced into /28s: 1,024 slices each, all in
// 10.240.0.0/16.
var benchNets = []lease.Request{
	request("bench-a", "10.240.0.0/18", 28),
	request("bench-b", "10.240.64.0/18", 28),
	request("bench-c", "10.240.128.0/18", 28),
}

// benchIP is simulated node i's InternalIP. The measuring node is .1 of
// the three documentation /24s; the others take .2-.254 of each, 759
// addresses: past that, nodes share an address (the agent does not look at
// uniqueness; every node still has its own three routes).
func benchIP(i int) string {
	nets := []string{"192.0.2.%d", "198.51.100.%d", "203.0.113.%d"}
	k := (i - 1) % (3 * 253)
	return fmt.Sprintf(nets[k/253], 2+k%253)
}

// BenchmarkRouteConvergence measures, on the real API server, one agent's
// convergence on a cluster of MULTI_BRIDGE_BENCH_NODES Nodes (default
// 1,000) with three networks each (a SubnetLease per node and network):
// the time from starting the agent to all routes in its namespace, its peak
// RSS, and the time from a new Node (and its leases) to its routes. Run it
// with `make bench-agent`; it reports numbers and asserts none.
func BenchmarkRouteConvergence(b *testing.B) {
	if env == nil {
		b.Skipf("needs root and %s=1 (run: sudo make bench-agent)", enableVar)
	}
	total := 1000
	if v := os.Getenv("MULTI_BRIDGE_BENCH_NODES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 || n > 1024 {
			b.Fatalf("MULTI_BRIDGE_BENCH_NODES=%q: want 2-1024 (the /18 pools hold 1,024 /28 slices)", v)
		}
		total = n
	}
	ctx := context.Background()
	s := env
	if err := s.server.Reset(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.server.Reset(context.Background()) })
	for _, r := range benchNets {
		cfg := nadConfig(r.Network, r.Pool.String(), r.Size)
		if err := s.server.CreateNAD(ctx, "default", r.Network, cfg); err != nil {
			b.Fatal(err)
		}
	}

	// Nodes 1..total-1 with their leases, created as their agents would.
	start := time.Now()
	if err := createBenchNodes(ctx, s, 1, total); err != nil {
		b.Fatal(err)
	}
	b.Logf("created %d Nodes and %d SubnetLeases in %s", total-1, 3*(total-1), time.Since(start).Round(time.Millisecond))

	// The measuring node: on-link for all three documentation /24s.
	nodeNS, peer := nettest.NewNS(b), nettest.NewNS(b)
	nettest.Connect(b, nettest.End{NS: nodeNS, Name: "eth0", Addrs: []string{"192.0.2.1/24", "198.51.100.1/24", "203.0.113.1/24"}},
		nettest.End{NS: peer, Name: "eth0"})
	if _, err := s.server.CreateNode(ctx, "bench-0000", "192.0.2.1", ""); err != nil {
		b.Fatal(err)
	}
	kernel, err := routes.NewReconciler(nodeNS.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer kernel.Close()
	count := func() int {
		ks, err := kernel.Kernel()
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, k := range ks {
			if k.Protocol == routes.Protocol {
				n++
			}
		}
		return n
	}

	dir := b.TempDir()
	want := 3 * (total - 1)
	b.ResetTimer()
	t0 := time.Now()
	agent, err := kubetest.StartAgent(kubetest.AgentOptions{Binary: s.agentBin, Node: "bench-0000", Kubeconfig: s.server.Kubeconfig,
		RuntimeDir: dir + "/run", NetNS: nodeNS.Path(), LogFile: dir + "/agent.log"})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = agent.Stop() }()
	for count() < want {
		if done, err := agent.Exited(); done {
			b.Fatalf("agent exited: %v\n%s", err, tail(agent.Log(), 30))
		}
		if time.Since(t0) > 5*time.Minute {
			b.Fatalf("%d of %d routes after 5 minutes\n%s", count(), want, tail(agent.Log(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	converged := time.Since(t0)
	rss, err := agent.MaxRSSKiB()
	if err != nil {
		b.Fatal(err)
	}

	// New nodes, one at a time: Node object, its three leases (what its
	// agent does), and the three routes on the measuring node.
	var lat, react []time.Duration
	for k := 0; k < 10; k++ {
		i := total + k
		t1 := time.Now()
		node, err := s.server.CreateNode(ctx, fmt.Sprintf("bench-new-%d", k), benchIP(i), "")
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range benchNets {
			r.Node, r.NodeUID = node.Name, node.UID
			if _, err := lease.NewClient(s.server.Dyn).Acquire(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
		t2 := time.Now()
		for count() < want+3*(k+1) {
			if time.Since(t1) > time.Minute {
				b.Fatalf("new node's routes missing after a minute")
			}
			time.Sleep(5 * time.Millisecond)
		}
		lat = append(lat, time.Since(t1))
		react = append(react, time.Since(t2))
	}
	b.StopTimer()
	rssAfter, _ := agent.MaxRSSKiB()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(react, func(i, j int) bool { return react[i] < react[j] })
	b.Logf("%d Nodes x 3 networks: %d routes in %s after agent start; agent VmHWM %.1f MiB (%.1f MiB after 10 more nodes)",
		total, want, converged.Round(time.Millisecond), float64(rss)/1024, float64(rssAfter)/1024)
	b.Logf("new Node + 3 leases -> 3 routes on the node: median %s, max %s (10 nodes; includes the 3 lease Acquires)",
		lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	b.Logf("last lease created -> routes on the node (the agent's reaction): median %s, max %s",
		react[len(react)/2].Round(time.Millisecond), react[len(react)-1].Round(time.Millisecond))
	b.ReportMetric(converged.Seconds(), "s-converge")
	b.ReportMetric(float64(rss)/1024, "MiB-VmHWM")
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "ms-newnode-median")
	b.ReportMetric(float64(want), "routes")
}

// createBenchNodes creates Nodes from..to-1 and their three leases (node i
// takes slice i of each pool; slice 0 is left for the measuring node).
func createBenchNodes(ctx context.Context, s *suite, from, to int) error {
	work := make(chan int)
	errs := make(chan error, to-from)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				errs <- createBenchNode(ctx, s, i)
			}
		}()
	}
	for i := from; i < to; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func createBenchNode(ctx context.Context, s *suite, i int) error {
	name := fmt.Sprintf("bench-%04d", i)
	node, err := s.server.CreateNode(ctx, name, benchIP(i), "")
	if err != nil {
		return err
	}
	c := lease.NewClient(s.server.Dyn)
	for _, r := range benchNets {
		slice := nthSlice(r.Pool, r.Size, i)
		if _, err := c.Create(ctx, lease.Lease{Network: r.Network, Node: name, Pool: r.Pool, Subnet: slice}, node.UID); err != nil {
			return err
		}
	}
	return nil
}

// nthSlice is slice i of an IPv4 pool.
func nthSlice(pool netip.Prefix, size, i int) netip.Prefix {
	a := pool.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(i) << (32 - size)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), size)
}
