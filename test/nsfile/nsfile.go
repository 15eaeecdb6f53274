// Package nsfile makes the throwaway network namespaces of the tests
// (test/nettest) and the benchmark (test/bench): each bind-mounted on a file
// of its own, as `ip netns add` does, so it outlives the thread that made
// it, and removed lazily, as `ip netns del` does.
package nsfile

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Dir holds the namespaces. It is not /run/netns on purpose: iproute2 scans
// /run/netns to name a veth's peer namespace, and a file there that a
// parallel test is just creating or removing makes `ip link show` fail
// ("Peer netns reference is invalid").
const Dir = "/run/multi-bridge-test/netns"

// Create makes a namespace with its loopback up (as a container runtime
// does) on a new file in Dir whose name starts with prefix, and returns the
// file's path.
func Create(prefix string) (string, error) {
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(Dir, prefix)
	if err != nil {
		return "", err
	}
	path := f.Name()
	_ = f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			errc <- err
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		errc <- unix.Mount(self, path, "none", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("creating netns at %s: %w", path, err)
	}
	return path, nil
}

// Remove unmounts and removes a namespace's file lazily (MNT_DETACH): a
// process forked at that moment by a parallel test briefly holds a copy of
// every open file, and a plain unmount would fail with EBUSY. The namespace
// dies with its last reference.
func Remove(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
