package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

func fakeVersion(v string) func(string) (string, error) {
	return func(string) (string, error) { return v, nil }
}

func write(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o755))
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Ino
}

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	require.NoError(t, err)
	return m
}

func TestInstallThenSameVersionIsANoOp(t *testing.T) {
	src, dir := filepath.Join(t.TempDir(), "multi-bridge"), t.TempDir()
	write(t, src, "binary v1")
	b := Binary{Source: src, Version: "v1.0.0", Dir: dir, Name: "multi-bridge"}
	out, err := b.Install()
	require.NoError(t, err)
	assert.Equal(t, Installed, out)
	target := filepath.Join(dir, "multi-bridge")
	fi, err := os.Stat(target)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
	before := inode(t, target)

	out, err = b.Install()
	require.NoError(t, err)
	assert.Equal(t, AlreadyCurrent, out)
	assert.Equal(t, before, inode(t, target), "the file was not touched")
	assert.Empty(t, tempFiles(t, dir))
}

func TestVersionCheck(t *testing.T) {
	cases := []struct {
		installed, ours string
		force           bool
		want            Outcome
	}{
		{"v2.0.0", "v1.0.0", false, KeptNewer},
		{"v2.0.0", "v1.0.0", true, Installed},
		{"v0.9.0", "v1.0.0", false, Installed},
		// A build after a tag (hack/version.sh) has the tag's precedence:
		// it replaces the tag's binary, not a newer release.
		{"v0.1.0", "v0.1.0+3.gabcdef0", false, Installed},
		{"v0.1.0+5.g1234567", "v0.1.0", false, Installed},
		{"v0.2.0", "v0.1.0+3.gabcdef0", false, KeptNewer},
		// Unversioned builds never block an install.
		{"v1.0.0", "dev", false, Installed},
		{"dev", "v1.0.0", false, Installed},
		{"garbage", "v1.0.0", false, Installed},
	}
	for _, c := range cases {
		src, dir := filepath.Join(t.TempDir(), "p"), t.TempDir()
		write(t, src, "ours")
		write(t, filepath.Join(dir, "p"), "theirs")
		out, err := Binary{Source: src, Version: c.ours, Dir: dir, Name: "p", Force: c.force, InstalledVersion: fakeVersion(c.installed)}.Install()
		require.NoError(t, err)
		assert.Equal(t, c.want, out, "%+v", c)
		got, _ := os.ReadFile(filepath.Join(dir, "p"))
		assert.Equal(t, map[Outcome]string{Installed: "ours", KeptNewer: "theirs"}[c.want], string(got), "%+v", c)
	}
}

// What a killed install left (a partial temporary file) goes with the next
// install, and a same-content binary that lost its mode is made executable.
func TestInstallRepairs(t *testing.T) {
	src, dir := filepath.Join(t.TempDir(), "p"), t.TempDir()
	write(t, src, "ours")
	write(t, filepath.Join(dir, ".p.tmp-123456"), "half a bin")
	b := Binary{Source: src, Version: "v1.0.0", Dir: dir, Name: "p"}
	_, err := b.Install()
	require.NoError(t, err)
	assert.Empty(t, tempFiles(t, dir))
	require.NoError(t, os.Chmod(filepath.Join(dir, "p"), 0o644))
	out, err := b.Install()
	require.NoError(t, err)
	assert.Equal(t, AlreadyCurrent, out)
	fi, err := os.Stat(filepath.Join(dir, "p"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
}

func TestFailedInstallLeavesNoTemporaryFile(t *testing.T) {
	src, dir := filepath.Join(t.TempDir(), "p"), t.TempDir()
	write(t, src, "ours")
	// A directory where the binary should go: the final rename fails.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "p", "x"), 0o755))
	_, err := Binary{Source: src, Version: "v1.0.0", Dir: dir, Name: "p"}.Install()
	require.Error(t, err)
	assert.Empty(t, tempFiles(t, dir))
}

func TestConfigWriteAndRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "net.d", "00-multi-bridge.conf")
	require.NoError(t, Config(path, []byte(`{"name":"mgmt"}`)))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, `{"name":"mgmt"}`, string(got))
	require.NoError(t, RemoveConfig(path))
	require.NoError(t, RemoveConfig(path), "removing twice is fine")
	assert.NoFileExists(t, path)
}

// The plugin is replaced while another process executes it in a loop: every
// exec succeeds and sees a whole binary of one version or the other, no
// temporary file is left, and the real version check keeps a newer binary.
func TestReplaceWhileExecuting(t *testing.T) {
	v1, v2 := nettest.BuildPlugin(t, "v0.1.0"), nettest.BuildPlugin(t, "v0.2.0")
	dir := t.TempDir()
	target := filepath.Join(dir, "multi-bridge")
	_, err := Binary{Source: v1, Version: "v0.1.0", Dir: dir, Name: "multi-bridge"}.Install()
	require.NoError(t, err)

	// The executing side is another process, as on a node (the container
	// runtime): in-process, a child forked while the installer holds the
	// temporary file open for writing would inherit that descriptor and make
	// the exec fail with "text file busy", a Go test artefact (golang/go#22315).
	work := t.TempDir()
	loop := exec.Command("sh", "-c", `while [ ! -e "$W/stop" ]; do
		"$T" 2>"$W/err" >/dev/null; rc=$?
		# Without CNI_COMMAND the plugin prints its about line and answers
		# with error 4 (exit 1); an exec of a half-written file fails otherwise.
		if [ $rc -le 1 ] && head -n1 "$W/err" | grep -q "^multi-bridge CNI plugin "; then head -n1 "$W/err" >>"$W/seen"; else echo "exit $rc: $(cat "$W/err")" >>"$W/failures"; fi
	done`)
	loop.Env = append(os.Environ(), "W="+work, "T="+target)
	require.NoError(t, loop.Start())
	t.Cleanup(func() { _ = loop.Process.Kill(); _ = loop.Wait() })
	for i := 0; i < 40; i++ {
		src, version := v2, "v0.2.0"
		if i%2 == 1 {
			src, version = v1, "v0.1.0"
		}
		out, err := Binary{Source: src, Version: version, Dir: dir, Name: "multi-bridge", Force: true}.Install()
		require.NoError(t, err)
		require.Equal(t, Installed, out)
	}
	require.NoError(t, os.WriteFile(filepath.Join(work, "stop"), nil, 0o644))
	require.NoError(t, loop.Wait())

	failures, _ := os.ReadFile(filepath.Join(work, "failures"))
	assert.Empty(t, string(failures))
	seen, err := os.ReadFile(filepath.Join(work, "seen"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(seen)), "\n")
	assert.Greater(t, len(lines), 20, "the plugin ran throughout the installs")
	for _, l := range lines {
		assert.Contains(t, []string{"multi-bridge CNI plugin v0.1.0", "multi-bridge CNI plugin v0.2.0"}, l)
	}
	assert.Empty(t, tempFiles(t, dir))

	// Last install was v0.1.0 (forced); v0.2.0 on top, then v0.1.0 without
	// force: the real version check, reading both binaries' versions, keeps
	// v0.2.0.
	out, err := Binary{Source: v2, Dir: dir, Name: "multi-bridge"}.Install()
	require.NoError(t, err)
	assert.Equal(t, Installed, out)
	out, err = Binary{Source: v1, Dir: dir, Name: "multi-bridge"}.Install()
	require.NoError(t, err)
	assert.Equal(t, KeptNewer, out)
	out, err = Binary{Source: v2, Dir: dir, Name: "multi-bridge"}.Install()
	require.NoError(t, err)
	assert.Equal(t, AlreadyCurrent, out, "a second install of the same version is a no-op")
}

func TestValidateConfig(t *testing.T) {
	good := `{"cniVersion":"1.1.0","name":"mgmt","type":"multi-bridge","bridge":"cni0","table":0,"ipam":{"type":"host-local","subnet":"10.240.0.0/24"}}`
	list := `{"cniVersion":"1.1.0","name":"mgmt","plugins":[{"type":"multi-bridge","bridge":"cni0","table":%s,"ipam":{"type":"host-local","subnet":"10.240.0.0/24"}},{"type":"portmap"}]}`
	for _, c := range []struct{ conf, err string }{
		{good, ""},
		{strings.Replace(list, "%s", "0", 1), ""},
		{strings.Replace(list, "%s", "254", 1), `invalid "table" 254`},
		{`{"cniVersion":"1.1.0","name":"cbr0","type":"flannel"}`, `no plugin of type "multi-bridge"`},
		{`not json`, "not a CNI network configuration"},
	} {
		err := ValidateConfig([]byte(c.conf))
		if c.err == "" {
			assert.NoError(t, err, c.conf)
		} else {
			assert.ErrorContains(t, err, c.err, c.conf)
		}
	}
}
