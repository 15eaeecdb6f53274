package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

func TestInstallSubcommand(t *testing.T) {
	plugin := nettest.BuildPlugin(t, "v0.3.0")
	bin, confDir := t.TempDir(), filepath.Join(t.TempDir(), "net.d")
	good := filepath.Join(t.TempDir(), "00-mgmt.conf")
	require.NoError(t, os.WriteFile(good, []byte(`{"cniVersion":"1.1.0","name":"mgmt","type":"multi-bridge","bridge":"cni0","table":0,"ipam":{"type":"host-local","subnet":"10.240.0.0/24"}}`), 0o644))
	bad := filepath.Join(t.TempDir(), "bad.conf")
	require.NoError(t, os.WriteFile(bad, []byte(`{"cniVersion":"1.1.0","name":"mgmt","type":"multi-bridge","table":254,"ipam":{"type":"host-local","subnet":"10.240.0.0/24"}}`), 0o644))

	assert.True(t, errors.Is(runInstall([]string{"-h"}), flag.ErrHelp), "--help is not a failure")

	err := runInstall([]string{"--plugin", plugin, "--cni-bin-dir", bin, "--cni-conf-dir", confDir, "--cni-config", bad})
	assert.ErrorContains(t, err, `invalid "table" 254`)
	assert.NoFileExists(t, filepath.Join(bin, "multi-bridge"), "a bad configuration is refused before anything is installed")
	assert.ErrorContains(t, runInstall([]string{"--plugin", plugin, "--cni-bin-dir", bin, "--cni-config", good}), "--cni-config needs --cni-conf-dir")

	require.NoError(t, runInstall([]string{"--plugin", plugin, "--cni-bin-dir", bin, "--cni-conf-dir", confDir, "--cni-config", good}))
	installed, err := os.ReadFile(filepath.Join(bin, "multi-bridge"))
	require.NoError(t, err)
	want, _ := os.ReadFile(plugin)
	assert.Equal(t, want, installed)
	assert.FileExists(t, filepath.Join(confDir, "00-mgmt.conf"))

	// An older plugin does not replace it without --force.
	older := nettest.BuildPlugin(t, "v0.2.0")
	require.NoError(t, runInstall([]string{"--plugin", older, "--cni-bin-dir", bin}))
	installed, _ = os.ReadFile(filepath.Join(bin, "multi-bridge"))
	assert.Equal(t, want, installed)
	require.NoError(t, runInstall([]string{"--plugin", older, "--cni-bin-dir", bin, "--force"}))
	installed, _ = os.ReadFile(filepath.Join(bin, "multi-bridge"))
	olderBytes, _ := os.ReadFile(older)
	assert.Equal(t, olderBytes, installed)
}
