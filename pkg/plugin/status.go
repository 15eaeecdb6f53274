package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/multi-bridge-cni/multi-bridge/pkg/bridge"
	"github.com/multi-bridge-cni/multi-bridge/pkg/policy"
)

// Status implements CNI STATUS: success means an ADD can be served now. The
// IPAM plugin must be installed and answer its own STATUS, and masquerading
// networks need a usable firewall backend.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	if _, err := policy.Load(p.opts.PolicyFile); err != nil {
		return notAvailable("no usable node policy", err)
	}
	c, err := p.begin("STATUS", args)
	if err != nil {
		return err
	}
	defer c.done()
	n := c.net
	if err := c.policy.Check(n); err != nil {
		return notAvailable("the node policy refuses this network", err)
	}
	if err := bridge.Usable(n.Bridge); err != nil {
		return notAvailable(fmt.Sprintf("bridge %q", n.Bridge), err)
	}
	for _, dir := range []string{n.DataDir(), n.RuntimeDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return notAvailable("cannot keep state", err)
		}
	}
	if n.Layer3 {
		conf, err := c.ipamConf(netip.Prefix{})
		if err != nil {
			return notAvailable("cannot serve ADD", err)
		}
		if _, err := c.runIPAM(context.Background(), "STATUS", conf, c.ipamArgs()); err != nil {
			return notAvailable(fmt.Sprintf("IPAM plugin %q is not ready", n.Conf.IPAM.Type), err)
		}
	}
	if n.Conf.IPMasq {
		if _, err := p.opts.Masquerade(n.MasqMode); err != nil {
			return notAvailable("no usable masquerade backend", err)
		}
	}
	return nil
}

// notAvailable is the spec's error 50 (plugin not available), keeping a more
// precise code (50 or 51) the IPAM plugin gave.
func notAvailable(reason string, err error) error {
	var e *types.Error
	if errors.As(err, &e) && (e.Code == types.ErrPluginNotAvailable || e.Code == types.ErrLimitedConnectivity) {
		return types.NewError(e.Code, reason+": "+e.Msg, e.Details)
	}
	return types.NewError(types.ErrPluginNotAvailable, reason+": "+err.Error(), "")
}
