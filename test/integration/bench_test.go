package integration

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// BenchmarkAddDel measures one ADD and its DEL through libcni (plugin and
// host-local processes included), for an IPv4 attachment, a dual-stack one,
// and a dual-stack one with DAD kept on (enabledad), which the issue priced
// at about 2 s. Run: sudo go test ./test/integration -run XXX -bench AddDel
func BenchmarkAddDel(b *testing.B) {
	for _, c := range []struct {
		name string
		conf map[string]any
	}{
		{"ipv4", net1(nil)},
		{"dual-stack", dualStackNet1(nil)},
		{"dual-stack-with-DAD", dualStackNet1(map[string]any{"enabledad": true})},
	} {
		b.Run(c.name, func(b *testing.B) {
			node, pod := nettest.NewNS(b), nettest.NewNS(b)
			rt := nettest.NewRuntime(b, node)
			conf := nettest.Conf(b, nettest.NewDirs(b), c.conf)
			for i := 0; b.Loop(); i++ {
				r := runtimeConf(fmt.Sprintf("bench-%d", i), pod.Path(), "net1")
				_, err := rt.Add(conf, r)
				require.NoError(b, err)
				require.NoError(b, rt.Del(conf, r))
			}
		})
	}
}
