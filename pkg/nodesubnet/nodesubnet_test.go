package nodesubnet

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func lease(network string) Lease {
	return Lease{Network: network, Node: "node-a", Pool: netip.MustParsePrefix("10.240.16.0/20"), Subnet: netip.MustParsePrefix("10.240.17.0/24")}
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), DirName)
	_, err := Read(dir, "net1")
	assert.ErrorIs(t, err, ErrNotLeased)
	require.NoError(t, Write(dir, lease("net1")))
	got, err := Read(dir, "net1")
	require.NoError(t, err)
	assert.Equal(t, lease("net1"), *got)
	b, err := os.ReadFile(filepath.Join(dir, "net1.json"))
	require.NoError(t, err)
	assert.Equal(t, `{"network":"net1","node":"node-a","pool":"10.240.16.0/20","subnet":"10.240.17.0/24"}`, string(b))
	nets, err := List(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{"net1"}, nets)
	require.NoError(t, Remove(dir, "net1"))
	assert.NoFileExists(t, filepath.Join(dir, "net1.json"))
	require.NoError(t, Remove(dir, "net1"), "a missing file is no error")
}

// A name that is a path never reaches the file system: not for writing,
// reading or removing (the reviewer's "../../x" wrote and deleted files
// outside the runtime directory).
func TestUnsafeNamesRefused(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "run", DirName)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	victim := filepath.Join(base, "x.json") // where "../../x" pointed
	content := []byte(`{"network":"../../x","node":"node-a","pool":"10.240.16.0/20","subnet":"10.240.17.0/24"}`)
	require.NoError(t, os.WriteFile(victim, content, 0o644))
	for _, name := range []string{"../../x", "a/b", ".", "..", "", ".hidden", `a\b`, "a\x00b"} {
		want := `network name ` + strconv.Quote(name) + ` cannot name a node subnet file: it must not be empty, start with '.' or hold '/', '\' or NUL; fix the network configuration's "name"`
		assert.EqualError(t, CheckName(name), want)
		assert.EqualError(t, Write(dir, lease(name)), want, "Write %q", name)
		_, err := Read(dir, name)
		assert.EqualError(t, err, want, "Read %q", name)
		assert.EqualError(t, Remove(dir, name), "not removing it: "+want, "Remove %q", name)
	}
	got, err := os.ReadFile(victim)
	require.NoError(t, err)
	assert.Equal(t, content, got, "the file outside stays as it was")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries)
	for _, name := range []string{"net1", "Net_1", "my.net", "a..b"} {
		assert.NoError(t, CheckName(name), name)
	}
}

// Remove deletes only a file that holds a valid lease of that network.
func TestRemoveOnlyALeaseOfThatNetwork(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, err string
	}{
		{"another network's lease", `{"network":"net2","node":"node-a","pool":"10.240.16.0/20","subnet":"10.240.17.0/24"}`,
			`not removing it: node subnet file ` + filepath.Join(dir, "net1.json") + ` holds a slice of network "net2", not of "net1"`},
		{"not JSON", `#!/bin/sh`,
			`not removing it: corrupt node subnet file ` + filepath.Join(dir, "net1.json") + `: invalid character '#' looking for beginning of value`},
		{"no slice of its pool", `{"network":"net1","pool":"10.240.16.0/20","subnet":"10.240.48.0/24"}`,
			`not removing it: node subnet file ` + filepath.Join(dir, "net1.json") + ` holds no valid slice of its pool`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "net1.json")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o644))
			assert.EqualError(t, Remove(dir, "net1"), tc.err)
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, tc.content, string(got))
		})
	}
}
