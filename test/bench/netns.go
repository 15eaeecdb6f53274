package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/multi-bridge-cni/multi-bridge/test/nsfile"
)

// Every namespace file the benchmark makes under nsfile.Dir (the test
// suite's directory, not /run/netns, so iproute2's scans never see them)
// starts with nsPrefix.
const nsPrefix = "mbbench-"

// namespaces tracks every namespace the benchmark made, so that cleanup
// removes them all, also after a failure or a signal.
type namespaces struct {
	mu    sync.Mutex
	paths map[string]bool
}

func newNamespaces() *namespaces { return &namespaces{paths: map[string]bool{}} }

// create makes a network namespace with its loopback up (nsfile.Create)
// and tracks it for cleanup.
func (s *namespaces) create(kind string) (string, error) {
	path, err := nsfile.Create(nsPrefix + kind + "-")
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.paths[path] = true
	s.mu.Unlock()
	return path, nil
}

// remove removes a namespace's file (nsfile.Remove): the namespace dies with
// its last reference (a plugin process still inside it keeps it alive until
// it exits).
func (s *namespaces) remove(path string) error {
	s.mu.Lock()
	delete(s.paths, path)
	s.mu.Unlock()
	return nsfile.Remove(path)
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

// leftovers lists the benchmark's namespace files still under nsfile.Dir (of this
// run or an earlier one that was killed with SIGKILL).
func leftovers() []string {
	entries, err := os.ReadDir(nsfile.Dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), nsPrefix) {
			out = append(out, filepath.Join(nsfile.Dir, e.Name()))
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
