// Command bench measures multi-bridge against the reference chain that does
// the same job (bridge v1.10.0 with ipMasq + host-local + sbr), side by side
// in one run, through the same runner (libcni, in process), each plugin run
// inside a throwaway "node" network namespace, a fresh pod namespace per pod:
//
//   - ADD and DEL latency on an empty node, and with N pods attached;
//   - wall time, failures and duplicate addresses of P parallel ADDs on a
//     fresh node, then P parallel DELs;
//   - firewall rules in the node namespace at 1 and at N pods;
//   - peak RSS and CPU time of the plugin processes of one ADD / DEL.
//
// Runs alternate between the two (A/B, B/A...) so that a noisy machine
// affects both alike; ratios are multi-bridge / reference. It needs root and
// never touches the machine's own network namespace: everything lives in
// namespaces under /run/multi-bridge-test/netns and a temporary directory,
// removed at the end, also on failure or SIGINT/SIGTERM.
//
// Run it with `sudo make bench` (BENCH_PODS=100 for a quick run).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/multi-bridge-cni/multi-bridge/pkg/policy"
)

type options struct {
	pods, parallel, samples, warmup, fillWorkers, parallelRounds int
	pluginDir, referenceDir, out, command, version               string
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func main() {
	var o options
	flag.IntVar(&o.pods, "pods", envInt("BENCH_PODS", 1000), "pods attached for the loaded-node measurements (BENCH_PODS)")
	flag.IntVar(&o.parallel, "parallel", envInt("BENCH_PARALLEL", 200), "parallel ADDs, then DELs, on a fresh node (BENCH_PARALLEL)")
	flag.IntVar(&o.parallelRounds, "parallel-rounds", envInt("BENCH_PARALLEL_ROUNDS", 2), "rounds of the parallel test per plugin, alternating (BENCH_PARALLEL_ROUNDS)")
	flag.IntVar(&o.samples, "samples", envInt("BENCH_SAMPLES", 100), "ADD+DEL samples per plugin for each latency measurement (BENCH_SAMPLES)")
	flag.IntVar(&o.warmup, "warmup", 3, "unrecorded ADD+DEL before each latency measurement")
	flag.IntVar(&o.fillWorkers, "fill-workers", 4, "concurrent ADDs while attaching the pods of the loaded node")
	flag.StringVar(&o.pluginDir, "plugin-dir", "bin/cni", "directory with multi-bridge and host-local")
	flag.StringVar(&o.referenceDir, "reference-dir", "bin/reference", "directory with bridge, sbr and host-local (v1.10.0)")
	flag.StringVar(&o.out, "out", "", "markdown file to write the results into (between the bench markers), e.g. BENCHMARKS.md")
	flag.StringVar(&o.command, "command", "", "the command that produced the run, for the report")
	flag.StringVar(&o.version, "version", "", "multi-bridge version, for the report")
	flag.Parse()
	os.Exit(run(o))
}

func run(o options) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root to create network namespaces (run: sudo make bench)")
		return 2
	}
	if old := leftovers(); len(old) > 0 {
		fmt.Fprintf(os.Stderr, "bench: namespaces of an earlier run are still there (remove them with: umount -l FILE && rm FILE):\n  %s\n", strings.Join(old, "\n  "))
		return 2
	}
	// The first signal stops the run between operations; the deferred
	// cleanup then removes everything. Later signals are ignored so that a
	// second Ctrl-C cannot interrupt the cleanup.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		for s := range sigs {
			fmt.Fprintf(os.Stderr, "\nbench: %v: stopping after the operations in flight, then cleaning up\n", s)
			cancel()
		}
	}()

	rootBefore, rootErr := countFirewall()
	tmp, err := os.MkdirTemp("", "multi-bridge-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	// The plugin keeps its files under this run's directory, which the
	// default node policy does not allow: a policy of its own does.
	if err := allowDirectory(tmp); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		_ = os.RemoveAll(tmp)
		return 1
	}
	nss := newNamespaces()
	b := &bench{o: o, ctx: ctx, nss: nss, tmp: tmp,
		flavours: [2]*flavour{multiBridge(absPath(o.pluginDir)), reference(absPath(o.referenceDir))}}
	b.machine = describeMachine(o)
	code := 0
	if err := b.run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		code = 1
	}

	// Cleanup, whatever happened.
	if err := nss.removeAll(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		code = 1
	}
	if err := os.RemoveAll(tmp); err != nil {
		fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		code = 1
	}
	if left := leftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "bench: namespaces left behind: %v\n", left)
		code = 1
	}
	for _, name := range []string{"mbbench0", "refbench0"} {
		if _, err := netlink.LinkByName(name); err == nil {
			fmt.Fprintf(os.Stderr, "bench: bridge %s found in the machine's own namespace\n", name)
			code = 1
		}
	}
	if rootAfter, err := countFirewall(); rootErr == nil && err == nil && rootAfter != rootBefore {
		fmt.Fprintf(os.Stderr, "bench: warning: the machine's own firewall changed during the run (%v -> %v); not by this benchmark, whose rules all live in node namespaces\n", rootBefore, rootAfter)
	}
	if code == 0 {
		fmt.Fprintln(os.Stderr, "bench: cleanup done: no namespace, bridge or firewall rule left")
	}
	return code
}

// bench is one run; index 0 of every pair is multi-bridge, 1 the reference.
type bench struct {
	o        options
	ctx      context.Context
	nss      *namespaces
	tmp      string
	flavours [2]*flavour
	machine  []string

	addEmpty, delEmpty   [2][]op
	addLoaded, delLoaded [2][]op
	fill                 [2][]op
	fwEmpty, fwLoaded    [2]firewall
	par                  [2][]parallelRound
	started              time.Time
	loadBefore           string
}

func (b *bench) run() error {
	b.started = time.Now()
	b.loadBefore = loadavg()
	for _, f := range b.flavours {
		for _, p := range []string{"host-local"} {
			if _, err := os.Stat(f.binDir + "/" + p); err != nil {
				return fmt.Errorf("%s: %w (run: make bench)", f.name, err)
			}
		}
	}
	steps := []struct {
		name string
		do   func() error
	}{
		{"latency on an empty node", b.emptyNode},
		{fmt.Sprintf("latency with %d pods attached", b.o.pods), b.loadedNode},
		{fmt.Sprintf("%d parallel ADDs then DELs on a fresh node", b.o.parallel), b.parallelRounds},
	}
	for _, s := range steps {
		if err := b.ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		fmt.Fprintf(os.Stderr, "bench: %s...\n", s.name)
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(os.Stderr, "bench: %s: done in %s\n", s.name, time.Since(start).Round(time.Second))
	}
	report := b.report()
	fmt.Println(report)
	if b.o.out != "" {
		if err := writeReport(b.o.out, report); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "bench: results written to %s\n", b.o.out)
	}
	return nil
}

// pair makes one fresh node per flavour; the caller destroys them.
func (b *bench) pair() ([2]*node, func(), error) {
	var nodes [2]*node
	destroy := func() {
		for _, n := range nodes {
			if n != nil {
				if err := n.destroy(); err != nil {
					fmt.Fprintln(os.Stderr, "bench: removing a node:", err)
				}
			}
		}
	}
	for i, f := range b.flavours {
		n, err := newNode(b.nss, f, b.tmp)
		if err != nil {
			destroy()
			return nodes, nil, err
		}
		nodes[i] = n
	}
	return nodes, destroy, nil
}

// samples runs ADD then DEL of a fresh pod on each node, alternating which
// node goes first, and records both; before is called on a node with the
// pod attached, at the first recorded sample.
func (b *bench) samples(nodes [2]*node, tag string, add, del *[2][]op, attached func(k int) error) error {
	for i := -b.o.warmup; i < b.o.samples; i++ {
		order := []int{0, 1}
		if i%2 != 0 {
			order = []int{1, 0}
		}
		for _, k := range order {
			if err := b.ctx.Err(); err != nil {
				return err
			}
			n := nodes[k]
			id := fmt.Sprintf("%s-%d", tag, i+b.o.warmup)
			if err := n.newPod(id); err != nil {
				return err
			}
			a := n.add(context.Background(), id)
			if a.err != nil {
				return fmt.Errorf("%s ADD %s: %w", n.f.name, id, a.err)
			}
			if i == 0 && attached != nil {
				if err := attached(k); err != nil {
					return err
				}
			}
			d := n.del(context.Background(), id)
			if d.err != nil {
				return fmt.Errorf("%s DEL %s: %w", n.f.name, id, d.err)
			}
			if err := n.removePod(id); err != nil {
				return err
			}
			if i >= 0 {
				add[k] = append(add[k], a)
				del[k] = append(del[k], d)
			}
		}
	}
	return nil
}

func (b *bench) emptyNode() error {
	nodes, destroy, err := b.pair()
	if err != nil {
		return err
	}
	defer destroy()
	return b.samples(nodes, "empty", &b.addEmpty, &b.delEmpty, func(k int) error {
		fw, err := nodeFirewall(nodes[k])
		b.fwEmpty[k] = fw
		return err
	})
}

func nodeFirewall(n *node) (firewall, error) {
	var fw firewall
	err := inNS(n.path, func() (err error) {
		fw, err = countFirewall()
		return err
	})
	return fw, err
}

// loadedNode attaches b.o.pods pods to each node (in alternating batches,
// a few ADDs at a time), counts the firewall rules, then measures ADD and
// DEL of one more pod.
func (b *bench) loadedNode() error {
	nodes, destroy, err := b.pair()
	if err != nil {
		return err
	}
	defer destroy()
	const batch = 50
	progress := time.Now()
	for start := 0; start < b.o.pods; start += batch {
		end := min(start+batch, b.o.pods)
		order := []int{0, 1}
		if (start/batch)%2 != 0 {
			order = []int{1, 0}
		}
		for _, k := range order {
			ops, err := b.attach(nodes[k], start, end)
			b.fill[k] = append(b.fill[k], ops...)
			if err != nil {
				return err
			}
		}
		if time.Since(progress) > 20*time.Second || end == b.o.pods {
			fmt.Fprintf(os.Stderr, "bench:   %d/%d pods attached on each node\n", end, b.o.pods)
			progress = time.Now()
		}
	}
	for k, n := range nodes {
		fw, err := nodeFirewall(n)
		if err != nil {
			return err
		}
		b.fwLoaded[k] = fw
	}
	return b.samples(nodes, "loaded", &b.addLoaded, &b.delLoaded, nil)
}

// attach adds pods [start, end) to n with b.o.fillWorkers ADDs at a time.
func (b *bench) attach(n *node, start, end int) ([]op, error) {
	ops := make([]op, end-start)
	ids := make(chan int)
	var wg sync.WaitGroup
	for range b.o.fillWorkers {
		wg.Go(func() {
			for i := range ids {
				id := fmt.Sprintf("fill-%d", i)
				if err := n.newPod(id); err != nil {
					ops[i-start] = op{err: err}
					continue
				}
				ops[i-start] = n.add(context.Background(), id)
			}
		})
	}
	for i := start; i < end && b.ctx.Err() == nil; i++ {
		ids <- i
	}
	close(ids)
	wg.Wait()
	if err := b.ctx.Err(); err != nil {
		return nil, err
	}
	for i, o := range ops {
		if o.err != nil {
			return ops, fmt.Errorf("%s ADD fill-%d: %w", n.f.name, start+i, o.err)
		}
	}
	return ops, nil
}

// parallelRound is one run of P parallel ADDs then P parallel DELs.
type parallelRound struct {
	addWall, delWall   time.Duration
	addFail, delFail   int
	duplicates         int
	addErrors, delErrs []string
	adds               []op
}

func (b *bench) parallelRounds() error {
	for r := range b.o.parallelRounds {
		order := []int{0, 1}
		if r%2 != 0 {
			order = []int{1, 0}
		}
		for _, k := range order {
			if err := b.ctx.Err(); err != nil {
				return err
			}
			pr, err := b.parallelRound(b.flavours[k])
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "bench:   %s: %d ADDs in %s (%d failed, %d duplicate addresses), %d DELs in %s (%d failed)\n",
				b.flavours[k].name, b.o.parallel, ms(pr.addWall), pr.addFail, pr.duplicates, b.o.parallel, ms(pr.delWall), pr.delFail)
			b.par[k] = append(b.par[k], pr)
		}
	}
	return nil
}

func (b *bench) parallelRound(f *flavour) (parallelRound, error) {
	var pr parallelRound
	n, err := newNode(b.nss, f, b.tmp)
	if err != nil {
		return pr, err
	}
	defer func() {
		if err := n.destroy(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: removing a node:", err)
		}
	}()
	ids := make([]string, b.o.parallel)
	for i := range ids {
		ids[i] = fmt.Sprintf("par-%d", i)
		if err := n.newPod(ids[i]); err != nil {
			return pr, err
		}
	}
	runAll := func(f func(id string) op) ([]op, time.Duration) {
		ops := make([]op, len(ids))
		var ready, done sync.WaitGroup
		gate := make(chan struct{})
		for i, id := range ids {
			ready.Add(1)
			done.Go(func() {
				ready.Done()
				<-gate
				ops[i] = f(id)
			})
		}
		ready.Wait()
		start := time.Now()
		close(gate)
		done.Wait()
		return ops, time.Since(start)
	}
	adds, wall := runAll(func(id string) op { return n.add(context.Background(), id) })
	pr.addWall, pr.adds = wall, adds
	seen := map[string]int{}
	for _, o := range adds {
		if o.err != nil {
			pr.addFail++
			pr.addErrors = append(pr.addErrors, o.err.Error())
		}
		for _, ip := range o.ips {
			seen[ip]++
		}
	}
	for _, c := range seen {
		if c > 1 {
			pr.duplicates += c - 1
		}
	}
	dels, wall := runAll(func(id string) op { return n.del(context.Background(), id) })
	pr.delWall = wall
	for _, o := range dels {
		if o.err != nil {
			pr.delFail++
			pr.delErrs = append(pr.delErrs, o.err.Error())
		}
	}
	return pr, nil
}

func absPath(p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	return wd + "/" + p
}

// allowDirectory points the plugins this process runs at a node policy that
// allows dir for their state, locks and logs.
func allowDirectory(dir string) error {
	path := filepath.Join(dir, "policy.json")
	doc, err := json.Marshal(map[string]any{"allowedDirectories": []string{dir}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		return err
	}
	return os.Setenv(policy.PathEnv, path)
}
