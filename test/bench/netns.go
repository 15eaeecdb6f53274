package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nsDir is where the benchmark's namespaces live: the test suite's directory
// (test/nettest.NSDir), not /run/netns, so iproute2's scans never see them.
// Every file the benchmark makes there starts with nsPrefix.
const (
	nsDir    = "/run/multi-bridge-test/netns"
	nsPrefix = "mbbench-"
)

// namespaces tracks every namespace the benchmark made, so that cleanup
// removes them all, also after a failure or a signal.
type namespaces struct {
	mu    sync.Mutex
	paths map[string]bool
}

func newNamespaces() *namespaces { return &namespaces{paths: map[string]bool{}} }

// create makes a network namespace on a thread of its own, brings its
// loopback up (as a container runtime does) and bind-mounts it under nsDir,
// so it outlives the thread, which Go discards as it stays locked. The same
// approach as test/nettest.NewNS, without a testing.TB.
func (s *namespaces) create(kind string) (string, error) {
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(nsDir, nsPrefix+kind+"-")
	if err != nil {
		return "", err
	}
	path := f.Name()
	_ = f.Close()
	s.mu.Lock()
	s.paths[path] = true
	s.mu.Unlock()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		if lo, err := netlink.LinkByName("lo"); err != nil {
			errc <- err
			return
		} else if err := netlink.LinkSetUp(lo); err != nil {
			errc <- err
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		errc <- unix.Mount(self, path, "none", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		_ = s.remove(path)
		return "", fmt.Errorf("creating netns at %s: %w", path, err)
	}
	return path, nil
}

// remove unmounts and deletes a namespace's file, lazily like `ip netns
// del`: the namespace dies with its last reference (a plugin process still
// inside it keeps it alive until it exits).
func (s *namespaces) remove(path string) error {
	s.mu.Lock()
	delete(s.paths, path)
	s.mu.Unlock()
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// removeAll removes every namespace still tracked.
func (s *namespaces) removeAll() error {
	s.mu.Lock()
	var paths []string
	for p := range s.paths {
		paths = append(paths, p)
	}
	s.mu.Unlock()
	var errs []error
	for _, p := range paths {
		errs = append(errs, s.remove(p))
	}
	return errors.Join(errs...)
}

// leftovers lists the benchmark's namespace files still under nsDir (of this
// run or an earlier one that was killed with SIGKILL).
func leftovers() []string {
	entries, err := os.ReadDir(nsDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), nsPrefix) {
			out = append(out, filepath.Join(nsDir, e.Name()))
		}
	}
	return out
}

// inNS runs f on a thread switched into the namespace at path; processes
// started by f inherit that namespace.
func inNS(path string, f func() error) error {
	n, err := ns.GetNS(path)
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Do(func(ns.NetNS) error { return f() })
}
