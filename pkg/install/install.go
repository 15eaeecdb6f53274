// Package install puts the plugin binary (and optionally a network
// configuration) onto the node, the way the DaemonSet's install step does
// it: atomically, so the container runtime never executes a half-written
// plugin, and without downgrading a newer plugin unless asked.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/mod/semver"

	"github.com/multi-bridge-cni/multi-bridge/pkg/atomicfile"
)

// Outcome says what Binary did.
type Outcome string

const (
	Installed      Outcome = "installed"
	AlreadyCurrent Outcome = "already current"
	KeptNewer      Outcome = "kept the newer installed binary"
)

// Binary installs one executable into a directory.
type Binary struct {
	// Source is the binary to install, Version its version (vX.Y.Z).
	Source, Version string
	// Dir is the host's CNI bin directory; Name the file name in it.
	Dir, Name string
	// Force replaces a newer installed binary.
	Force bool
	// InstalledVersion reads the version of the binary already in Dir;
	// default: run it without CNI_COMMAND, which prints
	// "multi-bridge CNI plugin <version>" (skel's about text) on stderr.
	InstalledVersion func(path string) (string, error)
}

// Install copies Source to Dir/Name unless that file already has the same
// content, or a newer version (and Force is off).
func (b Binary) Install() (Outcome, error) {
	target := filepath.Join(b.Dir, b.Name)
	src, err := os.ReadFile(b.Source)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", b.Source, err)
	}
	current, err := os.ReadFile(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return "", err
	case bytes.Equal(current, src):
		return AlreadyCurrent, nil
	case !b.Force:
		readVersion := b.InstalledVersion
		if readVersion == nil {
			readVersion = aboutVersion
		}
		// An unreadable version (an old or foreign binary) does not block
		// the install: only a version known to be newer does.
		if installed, verr := readVersion(target); verr == nil && newer(installed, b.Version) {
			return KeptNewer, nil
		}
	}
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(target, src, 0o755); err != nil {
		return "", fmt.Errorf("installing %s: %w", target, err)
	}
	return Installed, nil
}

// newer reports whether a is a valid semantic version above b; a "dev"
// build is never newer than anything.
func newer(a, b string) bool {
	if !semver.IsValid(a) {
		return false
	}
	if !semver.IsValid(b) {
		return true
	}
	return semver.Compare(a, b) > 0
}

func aboutVersion(path string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(path)
	cmd.Env = []string{} // no CNI_COMMAND: skel prints its about text
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return "", err
	}
	first, _, _ := strings.Cut(stderr.String(), "\n")
	fields := strings.Fields(first)
	if len(fields) == 0 {
		return "", fmt.Errorf("%s printed no version", path)
	}
	return fields[len(fields)-1], nil
}

// Config writes a network configuration file atomically (the cluster's
// default network for the runtime to find in its CNI conf dir).
func Config(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o644)
}

// RemoveConfig takes a configuration written by Config away again, e.g.
// when the agent stops, so the runtime stops scheduling pods onto it.
func RemoveConfig(path string) error {
	err := os.Remove(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
