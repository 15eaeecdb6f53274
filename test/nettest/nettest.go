// Package nettest builds throwaway network topologies for multi-bridge's
// tests: namespaces for a node, pods and outside hosts, veth links between
// them, and commands run inside them. Everything it creates is removed in
// t.Cleanup, also when the test fails.
package nettest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/multi-bridge-cni/multi-bridge/test/nsfile"
)

// RequireRoot skips a test that needs to create namespaces and links.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (run: sudo make test)")
	}
}

// NSDir holds the tests' namespaces (nsfile.Dir, not /run/netns).
const NSDir = nsfile.Dir

// NewNS creates a network namespace that is deleted when the test ends.
// Loopback is brought up, as a container runtime does.
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	RequireRoot(t)
	path, err := nsfile.Create("mbt-")
	if err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	n, err := ns.GetNS(path)
	if err != nil {
		_ = nsfile.Remove(path)
		t.Fatalf("opening netns: %v", err)
	}
	t.Cleanup(func() {
		if err := removeNS(n); err != nil {
			t.Errorf("removing netns: %v", err)
		}
	})
	return n
}

// DeleteNS removes a namespace before the test ends, as a runtime does when
// a container dies or a node reboots: its path goes stale.
func DeleteNS(t testing.TB, n ns.NetNS) {
	t.Helper()
	if err := removeNS(n); err != nil {
		t.Fatalf("deleting netns: %v", err)
	}
}

// removeNS closes n and removes its file (nsfile.Remove).
func removeNS(n ns.NetNS) error {
	_ = n.Close()
	return nsfile.Remove(n.Path())
}

// Run runs a command inside n and returns its combined output. The child
// inherits the namespace of the locked thread that starts it.
func Run(n ns.NetNS, name string, args ...string) (string, error) {
	var out bytes.Buffer
	err := n.Do(func(ns.NetNS) error {
		cmd := exec.Command(name, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		return cmd.Run()
	})
	return out.String(), err
}

// MustRun is Run that fails the test on error.
func MustRun(t testing.TB, n ns.NetNS, name string, args ...string) string {
	t.Helper()
	out, err := Run(n, name, args...)
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), n.Path(), err, out)
	}
	return out
}

// Sysctl sets a sysctl inside n.
func Sysctl(t testing.TB, n ns.NetNS, key, value string) {
	t.Helper()
	MustRun(t, n, "sysctl", "-qw", key+"="+value)
}

// End is one end of a veth link.
type End struct {
	NS   ns.NetNS
	Name string
	// Addrs in CIDR form, e.g. "198.51.100.1/24".
	Addrs []string
}

// Connect links two namespaces with a veth pair, addresses both ends and
// brings them up.
func Connect(t testing.TB, a, b End) {
	t.Helper()
	peer, err := ns.GetNS(b.NS.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	err = a.NS.Do(func(ns.NetNS) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = a.Name
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: b.Name, PeerNamespace: netlink.NsFd(int(peer.Fd()))})
	})
	if err != nil {
		t.Fatalf("creating veth %s/%s: %v", a.Name, b.Name, err)
	}
	for _, e := range []End{a, b} {
		for _, addr := range e.Addrs {
			args := []string{"addr", "add", addr, "dev", e.Name}
			if strings.Contains(addr, ":") {
				args = append(args, "nodad")
			}
			MustRun(t, e.NS, "ip", args...)
		}
		MustRun(t, e.NS, "ip", "link", "set", e.Name, "up")
	}
}

// Ping sends count pings from inside n and reports whether all came back.
func Ping(n ns.NetNS, args ...string) (string, error) {
	return Run(n, "ping", append([]string{"-c", "1", "-W", "2", "-n", "-q"}, args...)...)
}

// Lines splits command output into trimmed, non-empty lines.
func Lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.Join(strings.Fields(l), " ")
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Name returns a short name unique to the test, for files and networks.
func Name(t testing.TB, suffix string) string {
	return fmt.Sprintf("%s-%s", strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), suffix)
}
