// Package install puts the plugin binary (and optionally a network
// configuration) onto the node, the way the DaemonSet's install step does
// it: atomically, so the container runtime never executes a half-written
// plugin, and without downgrading a newer plugin unless asked.
package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/mod/semver"

	"github.com/multi-bridge-cni/multi-bridge/pkg/atomicfile"
	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
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
	// Source is the binary to install; Version its version (semver), read
	// from Source by InstalledVersion's method when empty.
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
// content, or a newer version (and Force is off). Temporary files an earlier,
// killed install left in Dir are removed first.
func (b Binary) Install() (Outcome, error) {
	readVersion := b.InstalledVersion
	if readVersion == nil {
		readVersion = VersionOf
	}
	target := filepath.Join(b.Dir, b.Name)
	src, err := os.ReadFile(b.Source)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", b.Source, err)
	}
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return "", err
	}
	leftovers, _ := filepath.Glob(filepath.Join(b.Dir, atomicfile.TempPrefix(target)+"*"))
	for _, f := range leftovers {
		_ = os.Remove(f)
	}
	current, err := os.ReadFile(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return "", err
	case bytes.Equal(current, src):
		// Same binary; make sure it is still executable.
		if err := os.Chmod(target, 0o755); err != nil {
			return "", err
		}
		return AlreadyCurrent, nil
	case !b.Force:
		ours := b.Version
		if ours == "" {
			ours, _ = readVersion(b.Source)
		}
		// An unreadable version (an old or foreign binary) does not block
		// the install: only a version known to be newer does.
		if installed, verr := readVersion(target); verr == nil && newer(installed, ours) {
			return KeptNewer, nil
		}
	}
	if err := atomicfile.WriteFile(target, src, 0o755); err != nil {
		return "", fmt.Errorf("installing %s: %w", target, err)
	}
	return Installed, nil
}

// newer reports whether a is newer than b. Only two valid semantic versions
// compare; build metadata (a build after a tag: v0.2.0+3.gabcdef0, see
// hack/version.sh) does not count, so such a build replaces its tag's binary
// when the content differs. Anything unversioned never blocks an install.
func newer(a, b string) bool {
	return semver.IsValid(a) && semver.IsValid(b) && semver.Compare(a, b) > 0
}

// VersionOf runs a multi-bridge plugin without CNI_COMMAND, which makes it
// print "multi-bridge CNI plugin <version>" on stderr, and returns the
// version. Releases since the hostile-input hardening also answer with the
// spec's error 4 (exit status 1); older ones exit 0.
func VersionOf(path string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(path)
	cmd.Env = []string{} // no CNI_COMMAND: the plugin prints its about text
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	runErr := cmd.Run()
	var exitErr *exec.ExitError
	if runErr != nil && !errors.As(runErr, &exitErr) {
		return "", runErr
	}
	first, _, _ := strings.Cut(stderr.String(), "\n")
	fields := strings.Fields(first)
	if !strings.HasPrefix(first, "multi-bridge CNI plugin ") || len(fields) == 0 {
		if runErr != nil {
			return "", fmt.Errorf("%s: %w", path, runErr)
		}
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

// ValidateConfig checks that data is a CNI network configuration (a single
// one or a conflist) with a multi-bridge plugin the plugin would accept, so
// the install step never puts a broken or foreign file into the runtime's
// conf dir.
func ValidateConfig(data []byte) error {
	var probe struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Type       string            `json:"type"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return fmt.Errorf("not a CNI network configuration (JSON object): %w", err)
	}
	plugins := []json.RawMessage{data}
	if probe.Type == "" {
		plugins = probe.Plugins
	}
	found := false
	for i, p := range plugins {
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			return fmt.Errorf("plugin %d: %w", i, err)
		}
		if m["type"] != "multi-bridge" {
			continue
		}
		found = true
		// As libcni does for a conflist: the list's name and version.
		if probe.Type == "" {
			m["name"], m["cniVersion"] = probe.Name, probe.CNIVersion
		}
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if _, err := config.Load(b, ""); err != nil {
			return err
		}
	}
	if !found {
		return errors.New(`it has no plugin of type "multi-bridge"`)
	}
	return nil
}
