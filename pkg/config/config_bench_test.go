package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
)

// multusArgs is CNI_ARGS as Multus builds it for a delegate.
const multusArgs = "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=netshoot1;" +
	"K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef;K8S_POD_UID=6f1c0a4e-8f0e-4a55-9a0c-1b2c3d4e5f60"

func exampleConfs(b *testing.B) map[string][]byte {
	b.Helper()
	files, err := filepath.Glob("../../examples/cni/*.conf")
	if err != nil || len(files) == 0 {
		b.Fatalf("no example configurations: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		out[filepath.Base(f)] = raw
	}
	return out
}

// BenchmarkLoad is what every ADD and CHECK does first: parse and validate
// the network configuration and CNI_ARGS (the seed's example networks).
func BenchmarkLoad(b *testing.B) {
	for name, raw := range exampleConfs(b) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := config.Load(raw, multusArgs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoadLenient is the DEL and GC path.
func BenchmarkLoadLenient(b *testing.B) {
	raw := exampleConfs(b)["10-net1.conf"]
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := config.LoadLenient(raw, multusArgs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIPAMConf builds the IPAM plugin's stdin from a loaded network,
// with a static address request as Multus passes it.
func BenchmarkIPAMConf(b *testing.B) {
	n, err := config.Load(exampleConfs(b)["10-net1.conf"], multusArgs+";IP=10.240.10.50/24")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.IPAMConf(nil); err != nil {
			b.Fatal(err)
		}
	}
}
