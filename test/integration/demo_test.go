package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// TestDemoScript runs `make demo`'s script against this build, so the demo a
// newcomer runs stays true.
func TestDemoScript(t *testing.T) {
	nettest.Heavy(t)
	cnitool := filepath.Join(nettest.RepoRoot(), "bin", "cnitool")
	if _, err := os.Stat(cnitool); err != nil {
		t.Fatalf("cnitool missing at %s: run 'make cnitool'", cnitool)
	}
	cmd := exec.Command(filepath.Join(nettest.RepoRoot(), "test", "demo", "seed-demo.sh"))
	cmd.Env = append(os.Environ(), "MULTI_BRIDGE_CNI_PATH="+nettest.CNIPath(t), "CNITOOL="+cnitool)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, want := range []string{
		"default via 10.240.10.1 dev net1",
		"101:\tfrom 10.240.10.2 lookup 1",
		"102:\tfrom 10.240.20.2 lookup 2",
		"1 packets transmitted, 1 received, 0% packet loss",
		"host veths left on the node: 0",
		"IPAM reservations left: 0",
		"firewall: unchanged by DEL (per-network rules only, nothing per pod)",
	} {
		assert.Contains(t, string(out), want)
	}
	assert.NotContains(t, string(out), "100% packet loss")
}
