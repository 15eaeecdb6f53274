// Package plugin implements the CNI verbs of multi-bridge on top of the
// node-side (bridge, masq), pod-side (podif, rules) and state packages.
//
// ADD is an ordered list of steps, each with its undo: a failure at any step
// rolls back everything before it, so a failed ADD leaves node and pod as they
// were. DEL is best effort in reverse and never fails on "already gone".
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/multi-bridge-cni/multi-bridge/pkg/bridge"
	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
	"github.com/multi-bridge-cni/multi-bridge/pkg/masq"
	"github.com/multi-bridge-cni/multi-bridge/pkg/nodesubnet"
	"github.com/multi-bridge-cni/multi-bridge/pkg/policy"
)

// IPAMCall is one run of the network's IPAM plugin.
type IPAMCall struct {
	Command string // ADD, DEL, CHECK, STATUS, GC
	Plugin  string // ipam.type
	Conf    []byte
	Args    *invoke.Args
	// Hold, when set, is inherited by the IPAM process: the attachment's
	// lock, held until the IPAM plugin exits even if this plugin is killed.
	Hold *os.File
}

// IPAM runs the network's IPAM plugin. The production implementation execs
// the binary named by ipam.type from CNI_PATH, as the CNI spec requires;
// tests wrap it to make a step fail.
type IPAM interface {
	Run(ctx context.Context, call IPAMCall) (types.Result, error)
}

// ExecIPAM is the IPAM implementation that execs the plugin binary.
type ExecIPAM struct{}

// Run execs the plugin; only ADD returns a result.
func (ExecIPAM) Run(ctx context.Context, call IPAMCall) (types.Result, error) {
	path, err := invoke.FindInPath(call.Plugin, filepath.SplitList(call.Args.Path))
	if err != nil {
		return nil, types.NewError(types.ErrPluginNotAvailable,
			fmt.Sprintf("IPAM plugin %q not found in CNI_PATH %q", call.Plugin, call.Args.Path),
			"install it in the CNI bin directory (e.g. /opt/cni/bin) or fix ipam.type")
	}
	a := *call.Args
	a.Command = call.Command
	exec := &ProcessExec{Hold: call.Hold}
	if call.Command == "ADD" {
		return invoke.ExecPluginWithResult(ctx, path, call.Conf, &a, exec)
	}
	return nil, invoke.ExecPluginWithoutResult(ctx, path, call.Conf, &a, exec)
}

// Options are the plugin's dependencies and test seams. The zero value is
// production behaviour.
type Options struct {
	// IPAM runs the IPAM plugin; default ExecIPAM.
	IPAM IPAM
	// Masquerade returns the masquerade backend for a mode ("" = auto);
	// default masq.New.
	Masquerade func(mode string) (masq.Backend, error)
	// AfterStep, when set, runs after each ADD step and fails the ADD if it
	// returns an error: the seam rollback tests use.
	AfterStep func(step string) error
	// LogOutput receives logs when the configuration has no logFile;
	// default os.Stderr (never stdout, which carries only the result).
	LogOutput io.Writer
	// PolicyFile is the node policy; default policy.DefaultPath. A missing
	// file means the default policy.
	PolicyFile string
}

// Plugin is multi-bridge's implementation of the CNI verbs.
type Plugin struct {
	opts Options
}

// New returns a plugin with opts, filling defaults.
func New(opts Options) *Plugin {
	if opts.IPAM == nil {
		opts.IPAM = ExecIPAM{}
	}
	if opts.Masquerade == nil {
		opts.Masquerade = masq.New
	}
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	if opts.PolicyFile == "" {
		opts.PolicyFile = policy.DefaultPath
	}
	return &Plugin{opts: opts}
}

// Funcs wires the verbs for skel.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    p.Add,
		Del:    p.Del,
		Check:  p.Check,
		Status: p.Status,
		GC:     p.GC,
	}
}

// call is what every verb starts from: the validated network and the
// runtime's arguments.
type call struct {
	p    *Plugin
	net  *config.Network
	args *skel.CmdArgs
	log  *slog.Logger
	done func()
	// policy is the node policy this call runs under.
	policy *policy.Policy
	// start is when the call began, for the durations in its logs.
	start time.Time
	// hold is the lock of the attachment being worked on, if any; the IPAM
	// plugin inherits it.
	hold *os.File
}

// runIPAM runs the network's IPAM plugin with command.
func (c *call) runIPAM(ctx context.Context, command string, conf []byte, args *invoke.Args) (types.Result, error) {
	return c.p.opts.IPAM.Run(ctx, IPAMCall{Command: command, Plugin: c.net.Conf.IPAM.Type, Conf: conf, Args: args, Hold: c.hold})
}

// lockAttachment takes the attachment's lock for the rest of the call (or
// until the returned function runs).
func (c *call) lockAttachment(containerID, ifName string) (func(), error) {
	f, err := bridge.AttachmentLock(c.net.RuntimeDir(), c.net.Conf.Name, containerID, ifName)
	if err != nil {
		return nil, err
	}
	c.hold = f
	return func() { c.hold = nil; _ = f.Close() }, nil
}

// elapsed is the time since the call began, rounded for logs.
func (c *call) elapsed() time.Duration {
	return time.Since(c.start).Round(10 * time.Microsecond)
}

func (p *Plugin) begin(verb string, args *skel.CmdArgs) (*call, error) {
	start := time.Now()
	// Tearing down must work with a configuration or CNI_ARGS that ADD
	// would refuse now, or the attachment's addresses stay reserved.
	teardown := verb == "DEL" || verb == "GC"
	var n *config.Network
	var problems []error
	var err error
	if teardown {
		n, problems, err = config.LoadLenient(args.StdinData, args.Args)
	} else {
		n, err = config.Load(args.StdinData, args.Args)
	}
	if err != nil {
		return nil, err
	}
	pol, policyErr := policy.Load(p.opts.PolicyFile)
	if policyErr != nil {
		if !teardown {
			return nil, policyErr
		}
		// Tearing down still needs to honour where files may go: with the
		// administrator's file unreadable, the default directories apply.
		pol = policy.Default()
	}
	// Logs, locks and state are written for every verb: where they go is
	// checked before anything is opened, and so is everything else that
	// refuses an ADD (a refused ADD writes nothing, not even a log).
	if err := pol.CheckPaths(n); err != nil {
		return nil, err
	}
	if err := pol.CheckResolvedPaths(n); err != nil {
		return nil, err
	}
	if verb == "ADD" {
		if err := checkIfName(args.IfName); err != nil {
			return nil, err
		}
		if err := pol.Check(n); err != nil {
			return nil, err
		}
	}
	log, done := newLogger(n, p.opts.LogOutput)
	log = log.With("verb", verb, "network", n.Conf.Name, "pod", n.Pod.String(),
		"containerID", args.ContainerID, "ifname", args.IfName)
	for _, problem := range problems {
		log.Info("going on despite an invalid configuration", "problem", problem)
	}
	if policyErr != nil {
		log.Error("tearing down under the default node policy", "problem", policyErr)
	}
	log.Debug("configuration loaded", "elapsed", time.Since(start).Round(10*time.Microsecond))
	return &call{p: p, net: n, args: args, log: log, done: done, policy: pol, start: start}, nil
}

// ipamConf is the IPAM plugin's configuration for this call. For a network
// sliced per node it carries this node's slice: the one recorded at ADD when
// given (DEL must release from the slice it allocated from), else the one the
// node agent leased.
func (c *call) ipamConf(recorded netip.Prefix) ([]byte, error) {
	slice, err := c.nodeSlice(recorded)
	if err != nil {
		return nil, err
	}
	if !slice.IsValid() {
		return c.net.IPAMConf(nil)
	}
	return c.net.IPAMConf(&slice)
}

// nodeSlice is the slice ipamConf uses; zero for a network not sliced per node.
// Without one, the attachment cannot have an address (ADD refuses before
// IPAM): callers that tear down treat ErrNotLeased as nothing to release.
func (c *call) nodeSlice(recorded netip.Prefix) (netip.Prefix, error) {
	if c.net.Pool == nil || recorded.IsValid() {
		return recorded, nil
	}
	dir := nodesubnet.Dir(c.net.RuntimeDir())
	lease, err := nodesubnet.Read(dir, c.net.Conf.Name)
	switch {
	case errors.Is(err, nodesubnet.ErrNotLeased):
		return netip.Prefix{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("this node has no slice of network %q's pool %s yet", c.net.Conf.Name, c.net.Pool),
			fmt.Sprintf("the multi-bridge agent writes it to %s once it has leased one; check that the agent runs on this node, then retry", nodesubnet.Path(dir, c.net.Conf.Name)))
	case err != nil:
		return netip.Prefix{}, err
	case lease.Pool != *c.net.Pool:
		return netip.Prefix{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("this node's slice %s of network %q belongs to pool %s, but the network's pool is now %s", lease.Subnet, c.net.Conf.Name, lease.Pool, c.net.Pool),
			"wait for the multi-bridge agent to lease a slice of the new pool, then retry")
	}
	return lease.Subnet, nil
}

// ipamArgs are the arguments the IPAM plugin gets: the runtime's, with
// CNI_ARGS cleaned of the IP= key (see config.Args.WithoutIP).
func (c *call) ipamArgs() *invoke.Args {
	return &invoke.Args{
		ContainerID:   c.args.ContainerID,
		NetNS:         c.args.Netns,
		IfName:        c.args.IfName,
		PluginArgsStr: c.net.IPAMArgs,
		Path:          c.args.Path,
	}
}
