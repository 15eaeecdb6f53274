package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"

	"github.com/multi-bridge-cni/multi-bridge/pkg/bridge"
	"github.com/multi-bridge-cni/multi-bridge/pkg/masq"
	"github.com/multi-bridge-cni/multi-bridge/pkg/store"
)

// GC implements CNI GC (spec 1.1): every attachment of this network that is
// not in cni.dev/valid-attachments is torn down like a DEL with its pod gone,
// the IPAM plugin collects its own garbage, and masquerade state of networks
// with no attachment left on the node is removed. It keeps going past
// individual failures and reports them all.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	c, err := p.begin("GC", args)
	if err != nil {
		return err
	}
	defer c.done()
	ctx := context.Background()
	n := c.net

	valid := map[types.GCAttachment]bool{}
	for _, a := range n.Conf.ValidAttachments {
		valid[a] = true
	}
	var errs []error
	recs, err := store.New(n.DataDir(), n.Conf.Name).List()
	if err != nil {
		errs = append(errs, err)
	}
	released := 0
	for i := range recs {
		rec := &recs[i]
		if valid[types.GCAttachment{ContainerID: rec.ContainerID, IfName: rec.IfName}] {
			continue
		}
		unlock, err := c.lockAttachment(rec.ContainerID, rec.IfName)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pod, closePod := c.openPod(rec.Netns)
		err = p.teardown(ctx, c, refOf(rec), pod, c.ipamArgs())
		closePod()
		unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("attachment %s/%s: %w", rec.ContainerID, rec.IfName, err))
			continue
		}
		released++
	}
	if n.Layer3 {
		errs = append(errs, p.gcIPAM(ctx, c)...)
	}
	errs = append(errs, p.gcMasquerade(ctx, c)...)
	c.log.Info("GC done", "valid", len(valid), "released", released, "errors", len(errs))
	return joinCNI(errs)
}

// gcIPAM delegates GC to the IPAM plugin. For host-local it also collects
// the on-disk store directly through host-local's own package: host-local
// before v1.10 accepted GC but released nothing.
func (p *Plugin) gcIPAM(ctx context.Context, c *call) []error {
	n := c.net
	var errs []error
	conf, err := c.ipamConf(netip.Prefix{})
	var cniErr *types.Error
	switch {
	case errors.As(err, &cniErr) && cniErr.Code == types.ErrTryAgainLater:
		// No slice on this node (yet, or its pool is exhausted): the IPAM
		// plugin cannot even load the network, and has nothing of it here
		// except what the store collection below finds.
		c.log.Info("no node slice: IPAM GC only through host-local's store")
	case err == nil:
		if _, err := c.runIPAM(ctx, "GC", conf, c.ipamArgs()); err != nil {
			errs = append(errs, fmt.Errorf("IPAM plugin %q GC: %w", n.Conf.IPAM.Type, err))
		}
	default:
		errs = append(errs, fmt.Errorf("IPAM plugin %q GC: %w", n.Conf.IPAM.Type, err))
	}
	if n.Conf.IPAM.Type == "host-local" {
		var ipam struct {
			DataDir string `json:"dataDir"`
		}
		if raw, ok := n.RawConf["ipam"]; ok {
			_ = json.Unmarshal(raw, &ipam)
		}
		s, err := disk.New(n.Conf.Name, ipam.DataDir)
		if err == nil {
			err = s.GC(n.Conf.ValidAttachments)
			_ = s.Close()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("host-local store GC: %w", err))
		}
	}
	return errs
}

// gcMasquerade removes the masquerade state of every network that has no
// attachment left on this node, this one included. The network's lock and a
// second look at its records under the lock order this against an ADD of that
// network, which records its attachment before setting up masquerade.
func (p *Plugin) gcMasquerade(ctx context.Context, c *call) []error {
	n := c.net
	backend, err := p.opts.Masquerade(n.MasqMode)
	if err != nil {
		if n.Conf.IPMasq {
			return []error{fmt.Errorf("masquerade backend: %w", err)}
		}
		return nil
	}
	networks, err := backend.Networks(ctx)
	if err != nil {
		return []error{fmt.Errorf("listing masquerade state: %w", err)}
	}
	var errs []error
	for _, network := range networks {
		// A network this data directory has never held attachments of
		// keeps its state elsewhere: whether it is idle is not ours to say.
		if _, err := os.Stat(store.New(n.DataDir(), network).Dir()); network != n.Conf.Name && err != nil {
			continue
		}
		if err := removeIdleMasquerade(ctx, backend, n.DataDir(), n.RuntimeDir(), network); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func removeIdleMasquerade(ctx context.Context, backend masq.Backend, dataDir, runtimeDir, network string) error {
	unlock, err := bridge.NetworkLock(runtimeDir, network)
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := store.New(dataDir, network).List()
	if err != nil || len(recs) > 0 {
		return err
	}
	if err := backend.Remove(ctx, network); err != nil {
		return fmt.Errorf("removing masquerade state of network %q: %w", network, err)
	}
	return nil
}
