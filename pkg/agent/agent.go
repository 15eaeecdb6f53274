// Package agent is multi-bridge's node agent. On every node it
//
//   - finds the networks whose configuration slices a pool per node
//     ("nodeSubnets"), in NetworkAttachmentDefinitions and in the node's CNI
//     conf dir;
//   - leases this node one slice of each (pkg/agent/lease), or takes the
//     Node's podCIDR for "fromNodePodCIDR" networks, and writes it to the
//     node-local file the plugin reads at ADD (pkg/nodesubnet);
//   - keeps "<slice> via <InternalIP>" routes to every other node's slices
//     (pkg/agent/routes), re-converging on API changes, on route changes in
//     the kernel and periodically;
//   - releases the leases of deleted Nodes (a real cluster's garbage
//     collector does it too, through the owner reference).
//
// All work happens in one reconcile loop, triggered by informer events,
// netlink notifications and a resync timer, so nothing in it needs locks
// beyond the counters it publishes.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/lease"
	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/routes"
	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
	"github.com/multi-bridge-cni/multi-bridge/pkg/nodesubnet"
	"github.com/multi-bridge-cni/multi-bridge/pkg/policy"
)

// Component is the agent's name in Events and its user agent.
const Component = "multi-bridge-agent"

// NADResource is the NetworkAttachmentDefinition resource (Multus).
func NADResource() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1", Resource: "network-attachment-definitions"}
}

// Event reasons besides the routes.ProblemKind ones.
const (
	ReasonSubnetLeased   = "SubnetLeased"
	ReasonSubnetReleased = "SubnetReleased"
	ReasonPoolExhausted  = "PoolExhausted"
	ReasonNoPodCIDR      = "NoPodCIDR"
	ReasonRouteConflict  = "RouteConflict"
	ReasonBadNetwork     = "InvalidNetworkConfig"
	ReasonBadSubnetFile  = "InvalidSubnetFile"
	ReasonBadPolicy      = "InvalidNodePolicy"
	// ReasonNetworkConflict: a definition of a network that contradicts
	// the established one (another pool or size, or a pool overlapping
	// another network's); ignored.
	ReasonNetworkConflict = "NetworkConflict"
	// ReasonSubnetChanged: this node's slice of a network is another one
	// than it was (its lease was lost and its old slice taken).
	ReasonSubnetChanged = "SubnetChanged"
)

// Options configure an agent.
type Options struct {
	// NodeName is the name of this node's Node object.
	NodeName string
	// Config reaches the API server.
	Config *rest.Config
	// RuntimeDir holds the node-local files (nodesubnet.Dir(RuntimeDir));
	// default config.DefaultRuntimeDir.
	RuntimeDir string
	// CNIConfDir, when set, is read for networks too (the cluster-default
	// network is a file there, not a NAD).
	CNIConfDir string
	// CNIConfig is a network configuration the agent is about to install
	// into CNIConfDir once the node is ready: its networks count from the
	// start, so that "ready" includes their slices.
	CNIConfig []byte
	// NetNS, when set, is the network namespace whose routes the agent
	// manages; default its own.
	NetNS string
	// Resync is the period of full reconciles and CNI conf dir reads;
	// default 30s.
	Resync time.Duration
	// OrphanGrace is how long a lease of a deleted Node may stay before any
	// agent, not only the one responsible, releases it; default 2m.
	OrphanGrace time.Duration
	// APITimeout bounds the API calls of one reconcile (leasing,
	// releasing); default 10s. Routes are reconciled from the informers'
	// caches before, so a hanging API server never delays their repair
	// by more than this.
	APITimeout time.Duration
	// Log receives the agent's logs; default slog.Default().
	Log *slog.Logger
	// PolicyFile is the node policy (policy.DefaultPath when empty); the
	// agent applies its allowedSubnets to NAD pools, read at every
	// reconcile.
	PolicyFile string
}

// Agent is one node's agent.
type Agent struct {
	opts   Options
	log    *slog.Logger
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	leases *lease.Client
	kernel *routes.Reconciler

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder

	nodeInformer  cache.SharedIndexInformer
	nodes         corelisters.NodeLister
	leaseInformer cache.SharedIndexInformer
	nadInformer   cache.SharedIndexInformer // nil until the NAD CRD exists

	dirty chan struct{}
	stats stats
	// ready is closed after the first reconcile that succeeded.
	ready     chan struct{}
	readyOnce sync.Once

	mu   sync.Mutex
	held map[string]lease.Lease // network -> this node's lease

	// Owned by the reconcile loop.
	// policy is the last node policy that could be read.
	policy     *policy.Policy
	fileDefs   []Definition
	confDirErr error             // the CNI conf dir could not be read: fileDefs are the last ones read
	reported   map[string]string // problem key -> message, to emit Events on change only
	history    history
	orphanSeen map[types.UID]time.Time
}

// New connects an agent; Run starts it.
func New(opts Options) (*Agent, error) {
	if opts.NodeName == "" {
		return nil, errors.New("the node name is empty: pass --node-name (in a DaemonSet: the downward API's spec.nodeName)")
	}
	if opts.Config == nil {
		return nil, errors.New("no API server configuration")
	}
	if opts.RuntimeDir == "" {
		opts.RuntimeDir = config.DefaultRuntimeDir
	}
	if opts.Resync <= 0 {
		opts.Resync = 30 * time.Second
	}
	if opts.OrphanGrace <= 0 {
		opts.OrphanGrace = 2 * time.Minute
	}
	if opts.APITimeout <= 0 {
		opts.APITimeout = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	cfg := rest.CopyConfig(opts.Config)
	cfg.UserAgent = Component + "/" + opts.NodeName
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	kernel, err := routes.NewReconciler(opts.NetNS)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		opts: opts, log: opts.Log.With("node", opts.NodeName), kube: kube, dyn: dyn,
		leases: lease.NewClient(dyn), kernel: kernel,
		dirty: make(chan struct{}, 1), ready: make(chan struct{}), held: map[string]lease.Lease{},
		reported: map[string]string{}, orphanSeen: map[types.UID]time.Time{}, history: history{},
	}
	a.stats.s.Problems = map[string]int{}
	return a, nil
}

// Stats returns a snapshot of the agent's counters.
func (a *Agent) Stats() Stats { return a.stats.snapshot() }

// Ready is closed once a reconcile has succeeded: this node's slices are
// leased and written, so the plugin can serve ADD.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// trigger asks for a reconcile; requests while one is pending merge.
func (a *Agent) trigger() {
	select {
	case a.dirty <- struct{}{}:
	default:
	}
}

// Run runs the agent until ctx ends. Routes and leases stay in place when
// it returns: a restarted agent takes them over without a gap in traffic.
func (a *Agent) Run(ctx context.Context) error {
	defer a.kernel.Close()
	if err := a.checkLeaseCRD(ctx); err != nil {
		return err
	}
	a.broadcaster = record.NewBroadcaster(record.WithContext(ctx))
	a.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.kube.CoreV1().Events("")})
	defer a.broadcaster.Shutdown()
	a.recorder = a.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component, Host: a.opts.NodeName})

	factory := informers.NewSharedInformerFactoryWithOptions(a.kube, 0, informers.WithTransform(slimNode))
	a.nodeInformer = factory.Core().V1().Nodes().Informer()
	a.nodes = factory.Core().V1().Nodes().Lister()
	if _, err := a.nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.trigger() },
		DeleteFunc: func(any) { a.trigger() },
		UpdateFunc: func(old, cur any) {
			if nodeChanged(old, cur) {
				a.trigger()
			}
		},
	}); err != nil {
		return err
	}
	a.leaseInformer = dynamicinformer.NewFilteredDynamicInformer(a.dyn, lease.GVR(), "", 0, cache.Indexers{}, nil).Informer()
	if err := a.leaseInformer.SetTransform(lease.StripManagedFields); err != nil {
		return err
	}
	if _, err := a.leaseInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.trigger() },
		UpdateFunc: func(_, _ any) { a.trigger() },
		DeleteFunc: func(obj any) { a.leaseGone(obj); a.trigger() },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	go a.leaseInformer.Run(ctx.Done())
	if err := a.discoverNADs(ctx); err != nil {
		return err
	}
	synced := []cache.InformerSynced{a.nodeInformer.HasSynced, a.leaseInformer.HasSynced}
	if a.nadInformer != nil {
		synced = append(synced, a.nadInformer.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}
	a.readConfDir()

	go a.kernel.Watch(ctx, a.trigger, func(err error) {
		if ctx.Err() == nil {
			a.log.Warn("netlink subscription", "error", err)
		}
	})
	a.log.Info("agent started", "runtimeDir", a.opts.RuntimeDir, "netns", a.opts.NetNS, "cniConfDir", a.opts.CNIConfDir,
		"routeProtocol", routes.Protocol)

	resync := time.NewTicker(a.opts.Resync)
	defer resync.Stop()
	retry := time.NewTimer(0)
	backoff := time.Duration(0)
	a.trigger()
	for {
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping; leases and routes stay in place")
			return nil
		case <-a.dirty:
		case <-retry.C:
		case <-resync.C:
			a.readConfDir()
			a.startNADInformer(ctx)
		}
		err := a.reconcile(ctx)
		if ctx.Err() != nil {
			continue
		}
		if err != nil {
			backoff = min(max(2*backoff, 200*time.Millisecond), 30*time.Second)
			a.log.Error("reconcile failed; retrying", "in", backoff, "error", err)
			retry.Reset(backoff)
		} else {
			backoff = 0
		}
	}
}

// Discovery retries back off from discoveryFirst to discoveryMax.
const (
	discoveryFirst = 200 * time.Millisecond
	discoveryMax   = 30 * time.Second
)

// checkLeaseCRD waits until the API server says whether it serves
// SubnetLeases, and refuses to run without them.
func (a *Agent) checkLeaseCRD(ctx context.Context) error {
	gv := lease.Group + "/" + lease.Version
	served, err := waitServed(ctx, func() error { return a.discover(gv) }, discoveryFirst, discoveryMax, a.discoveryRetry(gv))
	if err != nil {
		return err
	}
	if !served {
		return fmt.Errorf("the API server does not serve %s %s: install the CRD deploy/crds/subnetlease.yaml (kubectl apply -f deploy/crds/subnetlease.yaml)",
			gv, lease.Resource)
	}
	return nil
}

func (a *Agent) discover(groupVersion string) error {
	_, err := a.kube.Discovery().ServerResourcesForGroupVersion(groupVersion)
	return err
}

func (a *Agent) discoveryRetry(groupVersion string) func(error, time.Duration) {
	return func(err error, in time.Duration) {
		a.log.Warn("cannot tell whether the API server serves "+groupVersion+"; asking again", "in", in, "error", err)
	}
}

// discoverNADs starts watching NetworkAttachmentDefinitions if they are
// served, waiting for a definite answer: started without NADs while they
// exist, the agent would take every NAD network's routes away.
func (a *Agent) discoverNADs(ctx context.Context) error {
	gv := NADResource().GroupVersion().String()
	served, err := waitServed(ctx, func() error { return a.discover(gv) }, discoveryFirst, discoveryMax, a.discoveryRetry(gv))
	if err != nil {
		return err
	}
	if !served {
		a.log.Info("NetworkAttachmentDefinitions not served; using the CNI conf dir only (checked again every resync)")
		return nil
	}
	a.watchNADs(ctx)
	return nil
}

// startNADInformer starts watching NetworkAttachmentDefinitions once their
// CRD exists (clusters without Multus have only the conf dir's networks);
// called every resync until it does.
func (a *Agent) startNADInformer(ctx context.Context) {
	if a.nadInformer != nil {
		return
	}
	err := a.discover(NADResource().GroupVersion().String())
	if served, retry := Served(err); retry {
		a.log.Warn("cannot tell whether NetworkAttachmentDefinitions are served", "error", err)
		return
	} else if !served {
		a.log.Debug("NetworkAttachmentDefinitions not served; using the CNI conf dir only")
		return
	}
	a.watchNADs(ctx)
}

// watchNADs starts the NAD informer.
func (a *Agent) watchNADs(ctx context.Context) {
	inf := dynamicinformer.NewFilteredDynamicInformer(a.dyn, NADResource(), metav1.NamespaceAll, 0, cache.Indexers{}, nil).Informer()
	_ = inf.SetTransform(lease.StripManagedFields)
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.trigger() },
		UpdateFunc: func(_, _ any) { a.trigger() },
		DeleteFunc: func(any) { a.trigger() },
	})
	go inf.Run(ctx.Done())
	a.nadInformer = inf
	a.log.Info("watching NetworkAttachmentDefinitions")
}

// readConfDir reads the node's own definitions. A conf dir that cannot be
// read keeps the definitions read from it last (a passing error must not
// take their networks away), and is reported.
func (a *Agent) readConfDir() {
	var defs []Definition
	if a.opts.CNIConfig != nil {
		defs = append(defs, fileDefinition(a.opts.CNIConfig, "--cni-config"))
	}
	a.confDirErr = nil
	if a.opts.CNIConfDir != "" {
		dir, err := ReadConfDir(a.opts.CNIConfDir)
		if err != nil {
			a.confDirErr = err
			dir = slices.DeleteFunc(slices.Clone(a.fileDefs), func(d Definition) bool { return d.Source == "--cni-config" })
		}
		defs = append(defs, dir...)
	}
	a.fileDefs = defs
}

// leaseGone forgets this node's lease when its object is deleted (by an
// administrator, or by a garbage collector after the Node was re-created):
// the next reconcile leases again.
func (a *Agent) leaseGone(obj any) {
	l, err := lease.FromObject(obj)
	if err != nil || l.Node != a.opts.NodeName {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if h, ok := a.held[l.Network]; ok && h.UID == l.UID {
		delete(a.held, l.Network)
		a.log.Warn("this node's lease was deleted; leasing again", "lease", l.Name, "subnet", l.Subnet)
	}
}

// reconcile makes this node's leases, files and routes match the cluster.
func (a *Agent) reconcile(ctx context.Context) error {
	start := time.Now()
	err := a.reconcileOnce(ctx)
	if err == nil {
		a.readyOnce.Do(func() { close(a.ready) })
	}
	a.stats.update(func(s *Stats) {
		s.Reconciles++
		s.LastReconcile = time.Now()
		s.LastReconcileDuration = time.Since(start)
		s.LastError = ""
		if err != nil {
			s.ReconcileErrors++
			s.LastError = err.Error()
		}
	})
	return err
}

func (a *Agent) reconcileOnce(ctx context.Context) error {
	me := a.opts.NodeName
	self, err := a.nodes.Get(me)
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("node %q has no Node object: the agent waits for it (check --node-name)", me)
	}
	if err != nil {
		return err
	}
	leases := a.cachedLeases()
	dir := nodesubnet.Dir(a.opts.RuntimeDir)
	nets, refused := a.networks(State{Node: me, PodCIDRs: podCIDRs(self), Leases: leases, SliceFile: func(network string) *nodesubnet.Lease {
		l, _ := nodesubnet.Read(dir, network)
		return l
	}})
	nodeList, err := a.nodes.List(everything())
	if err != nil {
		return err
	}
	problems := map[string]int{}
	seen := map[string]bool{}
	for _, r := range refused {
		problems[r.Reason]++
		a.warn(seen, r.Reason+"/"+r.Key, r.Reason, r.Message)
	}

	// Routes first: they need only the informers' caches and the kernel,
	// so an API server that does not answer never delays their repair.
	rs, routeErr := a.reconcileRoutes(nets, nodeList, leases, problems, seen)

	// Then the work that calls the API server, bounded: the loop must come
	// back to the routes even when the API server hangs.
	apiCtx, cancel := context.WithTimeout(ctx, a.opts.APITimeout)
	defer cancel()
	held, sliceErrs := a.ensureSlices(apiCtx, nets, self, problems, seen)
	a.releaseOrphans(apiCtx, nodeList, leases)
	a.forget(seen)

	a.stats.update(func(s *Stats) {
		s.Networks = len(nets)
		s.LeasesHeld = held
		s.RoutesProgrammed = rs.programmed
		s.Problems = problems
		s.RoutesAdded += uint64(rs.added)
		s.RoutesDeleted += uint64(rs.deleted)
	})
	return errors.Join(append(sliceErrs, routeErr)...)
}

// ensureSlices gives this node its slice of every network; it returns how
// many it holds.
func (a *Agent) ensureSlices(ctx context.Context, nets map[string]Network, self *corev1.Node, problems map[string]int, seen map[string]bool) (int, []error) {
	var errs []error
	held := 0
	for _, name := range slices.Sorted(maps.Keys(nets)) {
		ok, err := a.ensureSlice(ctx, nets[name], self, problems, seen)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			held++
		}
	}
	return held, errs
}

// routeStats are what one reconcile did to the routes.
type routeStats struct{ programmed, added, deleted int }

// reconcileRoutes makes the kernel hold a route to every other node's
// slices, from the informers' caches only (no API call).
func (a *Agent) reconcileRoutes(nets map[string]Network, nodeList []*corev1.Node, leases []lease.Lease, problems map[string]int, seen map[string]bool) (routeStats, error) {
	peers := map[string]routes.Peer{}
	for _, node := range nodeList {
		peers[node.Name] = routes.Peer{Name: node.Name, InternalIPs: internalIPs(node)}
	}
	connected, err := a.kernel.Connected()
	if err != nil {
		return routeStats{}, err
	}
	desired, routeProblems := routes.Desired(a.opts.NodeName, allSlices(nets, nodeList, leases), peers, connected)
	kernel, err := a.kernel.Kernel()
	if err != nil {
		return routeStats{}, err
	}
	plan := routes.Diff(desired, kernel)
	failed, err := a.kernel.Apply(plan)
	if !plan.Empty() {
		a.log.Info("routes changed", "replaced", len(plan.Replace), "deleted", len(plan.Delete), "inPlace", plan.InPlace)
		for _, r := range plan.Replace {
			a.log.Debug("route", "dst", r.Dst, "via", r.Gw, "network", r.Network, "node", r.Node)
		}
	}
	for _, p := range routeProblems {
		problems[string(p.Kind)]++
		a.warn(seen, string(p.Kind)+"/"+p.Slice.Network+"/"+p.Slice.Node, string(p.Kind), p.Detail)
	}
	for _, r := range plan.Blocked {
		problems[ReasonRouteConflict]++
		a.warn(seen, ReasonRouteConflict+"/"+r.Network+"/"+r.Node, ReasonRouteConflict,
			fmt.Sprintf("slice %s of network %s on node %s is a connected subnet of this node (a bridge still holds an address in it?): no route via %s; remove the address",
				r.Dst, r.Network, r.Node, r.Gw))
	}
	return routeStats{programmed: len(desired) - len(plan.Blocked) - failed, added: len(plan.Replace), deleted: len(plan.Delete)}, err
}

// allSlices are every node's slices of the networks: their podCIDRs, or
// their canonical leases.
func allSlices(nets map[string]Network, nodeList []*corev1.Node, leases []lease.Lease) []routes.Slice {
	var out []routes.Slice
	for _, n := range nets {
		if n.FromNodePodCIDR {
			for _, node := range nodeList {
				if p, ok := podCIDRIn(podCIDRs(node), n.Pool); ok {
					out = append(out, routes.Slice{Network: n.Name, Node: node.Name, Subnet: p})
				}
			}
			continue
		}
		for _, l := range leases {
			if l.Network == n.Name && l.Canonical() {
				out = append(out, routes.Slice{Network: l.Network, Node: l.Node, Subnet: l.Subnet})
			}
		}
	}
	return out
}

// ensureSlice gives this node its slice of n and writes the file the plugin
// reads. It reports whether the node has a slice.
func (a *Agent) ensureSlice(ctx context.Context, n Network, self *corev1.Node, problems map[string]int, seen map[string]bool) (bool, error) {
	dir := nodesubnet.Dir(a.opts.RuntimeDir)
	// The slice the node had (nil: none, or a file the agent did not write).
	have, _ := nodesubnet.Read(dir, n.Name)
	var subnet netip.Prefix
	var ok bool
	var err error
	if n.FromNodePodCIDR {
		subnet, ok = a.podCIDRSlice(n, self, problems, seen)
	} else {
		subnet, ok, err = a.leasedSlice(ctx, n, self, PreferredSlice(have, n), problems, seen)
	}
	if err != nil {
		return false, err
	}
	if !ok {
		return false, a.removeFile(dir, n.Name, problems, seen)
	}
	return true, a.writeSlice(dir, n, have, subnet)
}

// podCIDRSlice is this node's slice of a fromNodePodCIDR network.
func (a *Agent) podCIDRSlice(n Network, self *corev1.Node, problems map[string]int, seen map[string]bool) (netip.Prefix, bool) {
	p, ok := podCIDRIn(podCIDRs(self), n.Pool)
	if !ok {
		problems[ReasonNoPodCIDR]++
		a.warn(seen, ReasonNoPodCIDR+"/"+n.Name, ReasonNoPodCIDR,
			fmt.Sprintf("network %s takes this node's slice from spec.podCIDRs, but none (%v) lies in its pool %s: "+
				"set the Node's podCIDR (kube-controller-manager --allocate-node-cidrs) or fix nodeSubnets.pool", n.Name, podCIDRs(self), n.Pool))
	}
	return p, ok
}

// leasedSlice is this node's leased slice of n, leased now if need be
// (prefer first).
func (a *Agent) leasedSlice(ctx context.Context, n Network, self *corev1.Node, prefer netip.Prefix, problems map[string]int, seen map[string]bool) (netip.Prefix, bool, error) {
	l, err := a.ensureLease(ctx, n, self, prefer)
	var ex *lease.ExhaustedError
	if errors.As(err, &ex) {
		// A problem of that network (an Event, a metric), not of the
		// agent: its other networks are served and it stays ready. A
		// lease released anywhere triggers the next try.
		problems[ReasonPoolExhausted]++
		a.warn(seen, ReasonPoolExhausted+"/"+n.Name, ReasonPoolExhausted, err.Error())
		return netip.Prefix{}, false, nil
	}
	if err != nil {
		return netip.Prefix{}, false, err
	}
	return l.Subnet, true, nil
}

// writeSlice writes the node subnet file of n unless it holds subnet
// already. A node whose slice changed gets a Warning Event: its pods still
// use addresses of the old slice, which may be another node's by now.
func (a *Agent) writeSlice(dir string, n Network, have *nodesubnet.Lease, subnet netip.Prefix) error {
	want := nodesubnet.Lease{Network: n.Name, Node: a.opts.NodeName, Pool: n.Pool, Subnet: subnet}
	if have != nil && *have == want {
		return nil
	}
	if err := nodesubnet.Write(dir, want); err != nil {
		return fmt.Errorf("writing %s: %w", nodesubnet.Path(dir, n.Name), err)
	}
	a.log.Info("node subnet file written", "network", n.Name, "subnet", subnet, "pool", n.Pool, "file", nodesubnet.Path(dir, n.Name))
	if have != nil && have.Subnet != subnet {
		msg := fmt.Sprintf("this node's slice of network %s changed from %s to %s: pods on this node that still have addresses of %s "+
			"must be restarted (those addresses may be another node's now)", n.Name, have.Subnet, subnet, have.Subnet)
		a.log.Warn(msg, "reason", ReasonSubnetChanged)
		a.event(corev1.EventTypeWarning, ReasonSubnetChanged, msg)
	}
	return nil
}

// removeFile takes the node subnet file of a network this node holds no
// slice of away, so that the plugin's ADD fails with "no slice yet". It
// removes only a file that holds a lease of that very network; any other
// file there is reported and left alone.
func (a *Agent) removeFile(dir, network string, problems map[string]int, seen map[string]bool) error {
	if _, err := nodesubnet.Read(dir, network); errors.Is(err, nodesubnet.ErrNotLeased) {
		return nil
	}
	if err := nodesubnet.Remove(dir, network); err != nil {
		problems[ReasonBadSubnetFile]++
		a.warn(seen, ReasonBadSubnetFile+"/"+network, ReasonBadSubnetFile,
			fmt.Sprintf("this node holds no slice of network %s, and its node subnet file is not the agent's: %v; remove the file by hand", network, err))
		return nil
	}
	a.log.Warn("removed node subnet file: this node holds no slice", "network", network)
	return nil
}

// ensureLease returns this node's lease of n, acquiring one when it holds
// none that fits (first start, agent restart, pool or size changed, lease
// deleted): prefer first, if it is free.
func (a *Agent) ensureLease(ctx context.Context, n Network, self *corev1.Node, prefer netip.Prefix) (lease.Lease, error) {
	req := lease.Request{Network: n.Name, Pool: n.Pool, Size: n.Size, Node: a.opts.NodeName, NodeUID: self.UID, Prefer: prefer}
	a.mu.Lock()
	h, ok := a.held[n.Name]
	a.mu.Unlock()
	if ok && req.Fits(h) && h.OwnerUID == self.UID {
		return h, nil
	}
	out, err := a.leases.Acquire(ctx, req)
	for _, r := range out.Released {
		a.log.Info("released this node's lease that no longer fits", "lease", r.Name, "subnet", r.Subnet, "network", n.Name, "pool", n.Pool, "size", n.Size)
		a.event(corev1.EventTypeNormal, ReasonSubnetReleased, fmt.Sprintf("released %s of network %s: the network now slices %s into /%d", r.Subnet, n.Name, n.Pool, n.Size))
	}
	a.stats.update(func(s *Stats) {
		s.LeasesReleased += uint64(len(out.Released))
		s.LeaseConflicts += uint64(out.Collisions)
	})
	if err != nil {
		return lease.Lease{}, err
	}
	l := out.Lease
	if out.Kept {
		a.log.Info("kept this node's lease", "lease", l.Name, "network", n.Name, "subnet", l.Subnet)
	} else {
		a.stats.update(func(s *Stats) { s.LeasesAcquired++ })
		a.log.Info("leased a slice", "lease", l.Name, "network", n.Name, "subnet", l.Subnet, "pool", n.Pool, "collisions", out.Collisions)
		a.event(corev1.EventTypeNormal, ReasonSubnetLeased, fmt.Sprintf("leased %s of network %s (pool %s) as SubnetLease %s", l.Subnet, n.Name, n.Pool, l.Name))
	}
	a.mu.Lock()
	a.held[n.Name] = l
	a.mu.Unlock()
	return l, nil
}

// releaseOrphans deletes the leases of Nodes that no longer exist. The
// garbage collector of a real cluster does the same through the owner
// reference; the agent does not rely on it. One agent per deleted node acts
// at once (ReleaseResponsible); any agent after OrphanGrace. A quorum read
// of the Node guards against a cache that has the lease but not yet its new
// Node, and the delete's preconditions against a lease adopted meanwhile.
func (a *Agent) releaseOrphans(ctx context.Context, nodes []*corev1.Node, leases []lease.Lease) {
	live := make([]string, 0, len(nodes))
	exists := map[string]bool{}
	for _, n := range nodes {
		live = append(live, n.Name)
		exists[n.Name] = true
	}
	now := time.Now()
	current := map[types.UID]bool{}
	for _, l := range leases {
		if exists[l.Node] || !l.Canonical() {
			continue
		}
		current[l.UID] = true
		first, ok := a.orphanSeen[l.UID]
		if !ok {
			first = now
			a.orphanSeen[l.UID] = now
		}
		if !ReleaseResponsible(l.Node, live, a.opts.NodeName) && now.Sub(first) < a.opts.OrphanGrace {
			continue
		}
		_, err := a.kube.CoreV1().Nodes().Get(ctx, l.Node, metav1.GetOptions{})
		if err == nil || !apierrors.IsNotFound(err) {
			continue // the Node exists (our cache lags) or we cannot tell
		}
		deleted, err := a.leases.Release(ctx, l)
		if err != nil {
			a.log.Warn("could not release lease of deleted node", "lease", l.Name, "error", err)
			continue
		}
		if !deleted {
			continue // released already; our cache has not seen it yet
		}
		a.stats.update(func(s *Stats) { s.LeasesReleased++ })
		a.log.Info("released lease of deleted node", "lease", l.Name, "deletedNode", l.Node, "subnet", l.Subnet, "network", l.Network)
	}
	for uid := range a.orphanSeen {
		if !current[uid] {
			delete(a.orphanSeen, uid)
		}
	}
}

func (a *Agent) cachedLeases() []lease.Lease {
	objs := a.leaseInformer.GetStore().List()
	out := make([]lease.Lease, 0, len(objs))
	for _, o := range objs {
		l, err := lease.FromObject(o)
		if err != nil {
			continue
		}
		out = append(out, l)
	}
	return out
}

// warn records a Warning Event on this node and a log line when a problem
// appears or its message changes; a problem that stays is not repeated.
func (a *Agent) warn(seen map[string]bool, key, reason, msg string) {
	seen[key] = true
	if a.reported[key] == msg {
		return
	}
	a.reported[key] = msg
	a.log.Warn(msg, "reason", reason)
	a.event(corev1.EventTypeWarning, reason, msg)
}

// forget drops problems that went away, so they are reported again if they
// come back.
func (a *Agent) forget(seen map[string]bool) {
	for k := range a.reported {
		if !seen[k] {
			delete(a.reported, k)
		}
	}
}

func (a *Agent) event(kind, reason, msg string) {
	if a.recorder == nil {
		return
	}
	self, err := a.nodes.Get(a.opts.NodeName)
	if err != nil {
		return
	}
	ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: self.Name, UID: self.UID}
	a.recorder.Event(ref, kind, reason, msg)
}
