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

// Path is the file of one network.
func Path(dir, network string) string { return filepath.Join(dir, network+".json") }

// Write stores a lease atomically.
func Write(dir string, l Lease) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(Path(dir, l.Network), data, 0o644)
}

// Read returns the lease of network, ErrNotLeased when there is none.
func Read(dir, network string) (*Lease, error) {
	data, err := os.ReadFile(Path(dir, network))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotLeased
	}
	if err != nil {
		return nil, err
	}
	var l Lease
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("corrupt node subnet file %s: %w", Path(dir, network), err)
	}
	if !l.Subnet.IsValid() || !l.Pool.IsValid() || !l.Pool.Contains(l.Subnet.Addr()) {
		return nil, fmt.Errorf("node subnet file %s holds no valid slice of its pool", Path(dir, network))
	}
	return &l, nil
}

// Remove deletes the file of a network; a missing file is not an error.
func Remove(dir, network string) error {
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
