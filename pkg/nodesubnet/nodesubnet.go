// Package nodesubnet is the hand-over between the node agent and the plugin:
// the agent leases this node's slice of a network's pool through the
// Kubernetes API and writes it to a small file on the node; the plugin reads
// it at ADD and gives the slice to the IPAM plugin. The file is written
// atomically, so the plugin never reads a torn one.
package nodesubnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/multi-bridge-cni/multi-bridge/pkg/atomicfile"
)

// DirName is the subdirectory of the runtime directory holding the files.
const DirName = "subnets"

// Lease is this node's slice of one network.
type Lease struct {
	Network string       `json:"network"`
	Node    string       `json:"node"`
	Pool    netip.Prefix `json:"pool"`
	Subnet  netip.Prefix `json:"subnet"`
}

// ErrNotLeased means the agent has not written a slice for the network yet.
var ErrNotLeased = errors.New("no node subnet leased yet")

// Dir is where the files of a runtime directory live.
func Dir(runtimeDir string) string { return filepath.Join(runtimeDir, DirName) }

// Path is the file of one network. It does not check the name: Read, Write
// and Remove do.
func Path(dir, network string) string { return filepath.Join(dir, network+".json") }

// CheckName refuses a network name that would not name a file directly in
// the directory: empty, "." or "..", or holding a path separator or NUL
// (config.Load refuses these and more already; this is the last line of
// defence against writing or deleting files elsewhere). Names starting with
// '.' are refused too: they are the atomic writer's temporary files.
func CheckName(network string) error {
	if network == "" || strings.HasPrefix(network, ".") || strings.ContainsAny(network, "/\\\x00") {
		return fmt.Errorf("network name %q cannot name a node subnet file: it must not be empty, start with '.' or hold '/', '\\' or NUL; "+
			"fix the network configuration's \"name\"", network)
	}
	return nil
}

// Write stores a lease atomically.
func Write(dir string, l Lease) error {
	if err := CheckName(l.Network); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(Path(dir, l.Network), data, 0o644)
}

// Read returns the lease of network, ErrNotLeased when there is none. A file
// that holds no valid slice of its pool, or another network's lease, is an
// error.
func Read(dir, network string) (*Lease, error) {
	if err := CheckName(network); err != nil {
		return nil, err
	}
	path := Path(dir, network)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotLeased
	}
	if err != nil {
		return nil, err
	}
	var l Lease
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("corrupt node subnet file %s: %w", path, err)
	}
	if !l.Subnet.IsValid() || !l.Pool.IsValid() || !l.Pool.Contains(l.Subnet.Addr()) {
		return nil, fmt.Errorf("node subnet file %s holds no valid slice of its pool", path)
	}
	if l.Network != network {
		return nil, fmt.Errorf("node subnet file %s holds a slice of network %q, not of %q", path, l.Network, network)
	}
	return &l, nil
}

// Remove deletes the file of a network, but only if it holds a valid lease
// of that very network (Read): a file the agent did not write stays, and
// the error says why. A missing file is not an error.
func Remove(dir, network string) error {
	if _, err := Read(dir, network); errors.Is(err, ErrNotLeased) {
		return nil
	} else if err != nil {
		return fmt.Errorf("not removing it: %w", err)
	}
	err := os.Remove(Path(dir, network))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// List returns the networks that have a file in dir.
func List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var nets []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok && !e.IsDir() && !strings.HasPrefix(name, ".") {
			nets = append(nets, name)
		}
	}
	return nets, nil
}
