package bridge

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// Port is one pod's veth pair as attached to a bridge.
type Port struct {
	Network     string
	ContainerID string
	IfName      string // name inside the pod
	PodNS       ns.NetNS
	MTU         int
	MAC         net.HardwareAddr // pod end; nil lets the kernel choose
	Hairpin     bool
}

// Attached is the result of Attach: both ends of the pair.
type Attached struct {
	Host netlink.Link
	Pod  net.Interface
}

// Attach creates the veth pair (the pod end born inside the pod, so no state
// exists where both ends sit in one namespace), enslaves the host end to the
// bridge and applies the port options.
func Attach(br *netlink.Bridge, p Port) (*Attached, error) {
	hostName := HostVethName(p.Network, p.ContainerID, p.IfName)
	// A host end with our derived name and no pod end under p.IfName is a
	// leftover of an interrupted attempt for this very attachment.
	if l, err := netlinksafe.LinkByName(hostName); err == nil && l.Type() == "veth" {
		_ = netlink.LinkDel(l)
	}
	nodeNS, err := ns.GetCurrentNS()
	if err != nil {
		return nil, err
	}
	defer nodeNS.Close()

	var pod net.Interface
	err = p.PodNS.Do(func(ns.NetNS) error {
		mac := ""
		if p.MAC != nil {
			mac = p.MAC.String()
		}
		_, podIf, err := ip.SetupVethWithName(p.IfName, hostName, p.MTU, mac, nodeNS)
		pod = podIf
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("creating veth pair %s (node) / %s (pod): %w", hostName, p.IfName, err)
	}
	host, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return nil, err
	}
	a := &Attached{Host: host, Pod: pod}
	if err := configurePort(br, host, p); err != nil {
		return a, err
	}
	return a, nil
}

func configurePort(br *netlink.Bridge, host netlink.Link, p Port) error {
	if err := netlink.LinkSetMaster(host, br); err != nil {
		return fmt.Errorf("attaching %s to bridge %s: %w", host.Attrs().Name, br.Name, err)
	}
	if p.Hairpin {
		if err := netlink.LinkSetHairpin(host, true); err != nil {
			return fmt.Errorf("setting hairpin mode on %s: %w", host.Attrs().Name, err)
		}
	}
	return nil
}

// IsHostEndOf reports whether the node's veth named hostName is the peer of
// the pod interface with index podIndex: together with the name derived from
// the attachment, that makes the pod interface this attachment's even before
// it was marked (an ADD killed between creating and marking it).
func IsHostEndOf(hostName string, podIndex int) bool {
	l, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return false
	}
	_, isVeth := l.(*netlink.Veth)
	return isVeth && l.Attrs().ParentIndex == podIndex
}

// DetachByName deletes a host veth (and with it the pod end) if it exists.
func DetachByName(hostName string) error {
	l, err := netlinksafe.LinkByName(hostName)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err != nil {
		return err
	}
	if l.Type() != "veth" {
		// Our derived names are veths; anything else is not ours to delete.
		return nil
	}
	if err := netlink.LinkDel(l); err != nil && !errors.As(err, &netlink.LinkNotFoundError{}) {
		return fmt.Errorf("deleting %s: %w", hostName, err)
	}
	return nil
}
