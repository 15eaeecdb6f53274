// Package bridge is the node side of multi-bridge: the Linux bridge of a
// network, the host end of each pod's veth, the gateway address and the
// node's forwarding sysctls. Everything here runs in the node's network
// namespace (the namespace the plugin was started in).
package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Marker is the alias multi-bridge gives the bridges it creates. Only on
// those does forceAddress remove addresses: a bridge someone else made
// (the primary CNI's, a node's LAN bridge) keeps what its owner put there.
const Marker = "multi-bridge"

// Spec is the bridge a network asks for.
type Spec struct {
	Name    string
	MTU     int
	Promisc bool
}

// Ensure returns the network's bridge, creating it if absent and bringing it
// up, and whether this call created it. It never deletes or re-creates a
// bridge: other pods may use it.
func Ensure(s Spec) (br *netlink.Bridge, created bool, err error) {
	br, err = lookup(s.Name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = s.Name
		attrs.MTU = s.MTU
		err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
		if err != nil && !errors.Is(err, syscall.EEXIST) {
			return nil, false, fmt.Errorf("creating bridge %q: %w", s.Name, err)
		}
		// EEXIST: a concurrent ADD created it first; use theirs.
		created = err == nil
		br, err = lookup(s.Name)
		if err == nil && created {
			// The kernel ignores an alias given at creation.
			if err := netlink.LinkSetAlias(br, Marker); err != nil {
				return nil, created, fmt.Errorf("marking bridge %q as multi-bridge's: %w", s.Name, err)
			}
			br.Alias = Marker
		}
		if err == nil {
			// A bridge whose MAC was never set takes the lowest MAC of its
			// ports and changes it as pods come and go, which pods' neighbour
			// caches (the gateway's MAC) do not follow. Setting it, even to
			// the same value, pins it.
			_ = netlink.LinkSetHardwareAddr(br, br.HardwareAddr)
		}
	}
	if err != nil {
		return nil, created, err
	}
	if s.Promisc && br.Promisc == 0 {
		if err := netlink.SetPromiscOn(br); err != nil {
			return nil, created, fmt.Errorf("setting bridge %q promiscuous: %w", s.Name, err)
		}
	}
	// The node routes the bridge's subnets itself; router advertisements
	// from pods must not give it routes. And no DAD on the bridge: until its
	// link-local address leaves "tentative" (1-2 s) the node cannot send a
	// neighbour solicitation there, so the first IPv6 packets to a new pod
	// wait or are lost; its addresses are the node's own (a MAC-derived
	// link-local and the gateway IPAM reserved).
	// A bridge somebody else made keeps its owner's settings.
	if CreatedByUs(br) {
		for _, key := range []string{"accept_ra", "accept_dad"} {
			_, _ = sysctl.Sysctl(fmt.Sprintf("net/ipv6/conf/%s/%s", s.Name, key), "0")
		}
	}
	if br.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(br); err != nil {
			return nil, created, fmt.Errorf("bringing bridge %q up: %w", s.Name, err)
		}
	}
	br, err = lookup(s.Name)
	return br, created, err
}

// RemoveIfUnused deletes a bridge this ADD created when nothing came to use
// it: no port and no address of its own (a failed first ADD of a network
// must not leave bridges behind; a concurrent ADD that attached a pod or a
// gateway keeps it). The caller holds the bridge's lock.
func RemoveIfUnused(name string) error {
	br, err := lookup(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err != nil || !CreatedByUs(br) {
		return err
	}
	busy, err := HasPorts(br, "")
	if err != nil || busy {
		return err
	}
	addrs, err := netlinksafe.AddrList(br, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			return nil
		}
	}
	if err := netlink.LinkDel(br); err != nil && !errors.As(err, &netlink.LinkNotFoundError{}) {
		return fmt.Errorf("removing bridge %q: %w", name, err)
	}
	return nil
}

// Ready returns the bridge of s when it needs nothing from Ensure: it
// exists, is up, and is promiscuous if asked. Ensure made it so; a bridge
// someone else made is used as it is, as Ensure would.
func Ready(s Spec) (*netlink.Bridge, bool) {
	br, err := lookup(s.Name)
	if err != nil || br.Flags&net.FlagUp == 0 || (s.Promisc && br.Promisc == 0) {
		return nil, false
	}
	return br, true
}

func lookup(name string) (*netlink.Bridge, error) {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		return nil, err
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("interface %q exists on the node but is a %s, not a bridge; name another \"bridge\" in the network configuration", name, l.Type())
	}
	return br, nil
}

// Usable reports why name cannot be the network's bridge: an interface of
// that name exists on the node and is not a bridge (a NIC, a bond, a veth,
// lo), which multi-bridge must never enslave to, re-address or bring down.
// Absent is usable.
func Usable(name string) error {
	_, err := existing(name)
	return err
}

// existing is the bridge called name, nil when there is none, or why the
// interface of that name cannot be used.
func existing(name string) (*netlink.Bridge, error) {
	l, err := netlinksafe.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("interface %q exists on the node and is a %s, not a bridge", name, l.Type())
	}
	return br, nil
}

// CheckSpec reports why s cannot be served, before anything is changed: the
// name belongs to another kind of interface, the pod's MTU is above the
// existing bridge's (frames the bridge would drop), or the bridge is someone
// else's and would be made promiscuous.
func CheckSpec(s Spec) error {
	br, err := existing(s.Name)
	if err != nil || br == nil {
		return err
	}
	if s.MTU > br.MTU {
		return fmt.Errorf("MTU %d is above the MTU %d of the existing bridge %q", s.MTU, br.MTU, s.Name)
	}
	if s.Promisc && br.Promisc == 0 && !CreatedByUs(br) {
		return fmt.Errorf("promiscMode would change the existing bridge %q, which multi-bridge did not create", s.Name)
	}
	return nil
}

// CreatedByUs reports whether multi-bridge created br.
func CreatedByUs(br *netlink.Bridge) bool {
	return br.Alias == Marker
}

// Lookup returns an existing bridge.
func Lookup(name string) (*netlink.Bridge, error) { return lookup(name) }

// HostVethName is the node-side name of a pod's veth. It is derived from the
// attachment (network, container, interface) so that DEL finds it even when
// the pod's netns is gone and a killed ADD leaves nothing it cannot name,
// and so that two networks' attachments never share one; "veth" keeps
// NetworkManager away.
func HostVethName(network, containerID, ifName string) string {
	sum := sha256.Sum256([]byte(network + "/" + containerID + "/" + ifName))
	return "veth" + hex.EncodeToString(sum[:])[:11]
}

// Lock serializes what the kernel does not: creating a bridge and choosing
// its gateway address. It is per bridge, never global, and a file lock so it
// holds across plugin processes.
func Lock(runtimeDir, bridgeName string) (unlock func(), err error) {
	return locked(bridgeLockPath(runtimeDir, bridgeName), unix.LOCK_EX)
}

// SharedLock is the bridge's lock taken shared: any number of ADDs that
// found the bridge ready hold it together until their veth is on the
// bridge, so that the rollback of the ADD that created the bridge (which
// takes Lock) cannot remove it under them.
func SharedLock(runtimeDir, bridgeName string) (unlock func(), err error) {
	return locked(bridgeLockPath(runtimeDir, bridgeName), unix.LOCK_SH)
}

func bridgeLockPath(runtimeDir, bridgeName string) string {
	return filepath.Join(runtimeDir, "bridge-"+bridgeName+".lock")
}

// NetworkLock serializes per-network node state (masquerade set-up and its
// rollback) across plugin processes.
func NetworkLock(runtimeDir, network string) (unlock func(), err error) {
	return locked(filepath.Join(runtimeDir, "network-"+network+".lock"), unix.LOCK_EX)
}

// locked takes the lock at path (how: LOCK_EX or LOCK_SH) and returns what
// lets it go.
func locked(path string, how int) (unlock func(), err error) {
	f, err := lockFile(path, how)
	if err != nil {
		return nil, err
	}
	return func() { _ = f.Close() }, nil
}

// attachmentLockBuckets bounds the attachment lock files: attachments hash
// onto these, so the files never accumulate; two attachments sharing a
// bucket only wait for each other.
const attachmentLockBuckets = 1024

// AttachmentLock orders the operations on one attachment (ADD, DEL, GC's
// teardown of it). The returned file holds the lock: handed to a child
// process (the IPAM plugin), the child keeps it held until it exits, so a
// DEL after an ADD was killed waits for the orphaned IPAM plugin to finish
// its reservation before releasing it, instead of racing it. Close the file
// to unlock.
func AttachmentLock(runtimeDir, network, containerID, ifName string) (*os.File, error) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(network + "/" + containerID + "/" + ifName))
	bucket := h.Sum32() % attachmentLockBuckets
	return lockFile(filepath.Join(runtimeDir, "attachments", fmt.Sprintf("%04d.lock", bucket)), unix.LOCK_EX)
}

// lockFile opens path and takes a flock on it (how: LOCK_EX or LOCK_SH);
// closing the file (and every copy a child inherited) releases it.
func lockFile(path string, how int) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating lock directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("taking lock %s: %w", path, err)
	}
	return f, nil
}
