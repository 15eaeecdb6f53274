// Package e2e runs multi-bridge-agent processes against a real kube-apiserver
// (hack/apiserver.sh) and programs routes in throwaway network namespaces:
// agents racing for slices, nodes added and deleted, restarts, routes
// deleted by hand, nodes on another L2 segment, and a three-node cluster
// with pods on every node, as the seed's cluster demo had.
//
// The tests need root and MULTI_BRIDGE_E2E=1 (make test-e2e sets it); the
// plain `go test ./...` skips them. They share one API server and run one
// after the other; each starts from an empty cluster (kubetest.Reset).
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multi-bridge-cni/multi-bridge/test/kubetest"
	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// suite is what TestMain prepared.
type suite struct {
	server   *kubetest.Server
	agentBin string
}

// env is set once by TestMain before any test runs, read-only afterwards.
var env *suite

const enableVar = "MULTI_BRIDGE_E2E"

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Getenv(enableVar) == "" || os.Geteuid() != 0 {
		return m.Run() // every test skips
	}
	tmp, err := os.MkdirTemp("", "multi-bridge-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	s := &suite{}
	if s.agentBin, err = kubetest.Build(tmp, "multi-bridge-agent"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cniDir := filepath.Join(tmp, "cni")
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := kubetest.Build(cniDir, "multi-bridge"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, p := range nettest.IPAMPlugins {
		src := filepath.Join(kubetest.RepoRoot(), "bin", "cni", p)
		if _, err := os.Stat(src); err != nil {
			fmt.Fprintf(os.Stderr, "IPAM plugin %s missing at %s: run 'make ipam-plugins'\n", p, src)
			return 1
		}
		if err := os.Symlink(src, filepath.Join(cniDir, p)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	os.Setenv("MULTI_BRIDGE_TEST_CNI_PATH", cniDir)
	if err := nettest.UseTestPolicy(tmp); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if s.server, err = kubetest.StartServer(tmp); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.server.Stop()
	env = s
	return m.Run()
}

// setup skips unless the suite runs, and empties the cluster.
func setup(t *testing.T) *suite {
	t.Helper()
	if env == nil {
		t.Skipf("end-to-end test: needs root and %s=1 (run: sudo make test-e2e)", enableVar)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := env.server.Reset(ctx); err != nil {
		t.Fatalf("resetting the cluster: %v", err)
	}
	return env
}

// eventually polls cond every 100 ms until it holds or timeout passes; then
// the test fails with cond's last explanation. It is a deadline for
// convergence, not a performance assertion.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var detail string
	for {
		var ok bool
		ok, detail = cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %s", what, timeout, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// converge is how long agents may take to react in these tests.
const converge = 20 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func equalLines(want, got []string) (bool, string) {
	w, g := strings.Join(want, "\n"), strings.Join(got, "\n")
	return w == g, fmt.Sprintf("want\n%s\ngot\n%s", w, g)
}
