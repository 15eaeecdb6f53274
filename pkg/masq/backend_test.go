package masq

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A node without nft gets the iptables backend; an explicit mode is obeyed.
// Choosing only runs the tools' version checks: nothing on the machine is
// changed.
func TestBackendChoice(t *testing.T) {
	// A PATH with iptables and ip6tables but no nft.
	dir := t.TempDir()
	for _, name := range []string{"iptables", "ip6tables"} {
		target, err := exec.LookPath(name)
		require.NoError(t, err, "%s missing: run hack/install-deps.sh", name)
		require.NoError(t, os.Symlink(target, filepath.Join(dir, name)))
	}
	t.Setenv("PATH", dir)
	b, err := New("")
	require.NoError(t, err)
	assert.Equal(t, "iptables", b.Name(), "without nft, iptables")
	_, err = New("nftables")
	assert.ErrorContains(t, err, "nft")

	t.Setenv("PATH", "/nowhere")
	_, err = New("")
	assert.ErrorContains(t, err, "neither nftables")
	assert.ErrorContains(t, err, "install the nftables package")
}
