// Package store keeps what the plugin decided at ADD for each attachment on
// this node (the IPAM result, the table and preference chosen automatically),
// because DEL, CHECK and GC need it after the pod's netns, the interface or
// the runtime's cache are gone. It is node-local like host-local's own store;
// nothing in it is shared between nodes.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Record is one attachment's state.
type Record struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	Netns       string `json:"netns"`
	HostVeth    string `json:"hostVeth"`
	// Subnet is the node's slice the IPAM plugin allocated from, for
	// networks with nodeSubnets (DEL must release from the same slice).
	Subnet   netip.Prefix `json:"subnet,omitzero"`
	Table    int          `json:"table"`
	Priority int          `json:"priority"`
	// Result is the CNI result returned by ADD (current spec version).
	Result json.RawMessage `json:"result"`
}

// Store is the directory of one network's records.
type Store struct {
	dir string
}

// New returns the store of network under dataDir.
func New(dataDir, network string) Store {
	return Store{dir: filepath.Join(dataDir, network)}
}

// Dir is the store's directory.
func (s Store) Dir() string { return s.dir }

func (s Store) path(containerID, ifName string) string {
	// ':' separates them because neither can contain it (skel validates
	// container IDs as [a-zA-Z0-9][a-zA-Z0-9_.-]* and interface names
	// without '/', ':' or spaces), so no two attachments share a file.
	return filepath.Join(s.dir, containerID+":"+ifName+".json")
}

// Save writes a record atomically: a reader sees the old record or the new
// one, never a torn file, even if the plugin is killed mid-write.
func (s Store) Save(r Record) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return WriteFileAtomic(s.path(r.ContainerID, r.IfName), data, 0o600)
}

// Load returns the record of an attachment, or nil when there is none.
func (s Store) Load(containerID, ifName string) (*Record, error) {
	data, err := os.ReadFile(s.path(containerID, ifName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("corrupt state file %s: %w", s.path(containerID, ifName), err)
	}
	return &r, nil
}

// Delete removes a record, and the temporary file of a write the plugin was
// killed in; a missing one is not an error.
func (s Store) Delete(containerID, ifName string) error {
	path := s.path(containerID, ifName)
	partial, _ := filepath.Glob(filepath.Join(s.dir, "."+filepath.Base(path)+".tmp-*"))
	var errs []error
	for _, p := range append(partial, path) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// List returns every record of the network. Unreadable files are skipped
// and reported together, so one bad file never hides the others.
func (s Store) List() ([]Record, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []Record
	var errs []error
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var r Record
		if err := json.Unmarshal(data, &r); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
			continue
		}
		recs = append(recs, r)
	}
	return recs, errors.Join(errs...)
}

// WriteFileAtomic writes data to a temporary file in the target's directory,
// syncs it and renames it over the target, removing the temporary file on any
// failure.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
