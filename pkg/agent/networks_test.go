package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/multi-bridge-cni/multi-bridge/pkg/nodesubnet"
)

var pfx = netip.MustParsePrefix

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		config  string
		want    []Network
		wantErr string
	}{
		{
			name:   "single configuration",
			config: `{"cniVersion":"1.1.0","name":"net1","type":"multi-bridge","bridge":"cni1","nodeSubnets":{"pool":"10.240.16.0/20","size":24},"ipam":{"type":"host-local"}}`,
			want:   []Network{{Name: "net1", Pool: pfx("10.240.16.0/20"), Size: 24, Source: "nad:demo/net1"}},
		},
		{
			name:   "podCIDR network",
			config: `{"cniVersion":"1.1.0","name":"mgmt","type":"multi-bridge","nodeSubnets":{"pool":"10.240.0.0/20","fromNodePodCIDR":true},"ipam":{"type":"host-local"}}`,
			want:   []Network{{Name: "mgmt", Pool: pfx("10.240.0.0/20"), FromNodePodCIDR: true, Source: "nad:demo/net1"}},
		},
		{
			name:   "fixed subnet: nothing to lease",
			config: `{"cniVersion":"1.1.0","name":"net1","type":"multi-bridge","ipam":{"type":"host-local","subnet":"10.240.10.0/24"}}`,
		},
		{
			name:   "another plugin",
			config: `{"cniVersion":"1.1.0","name":"macvlan1","type":"macvlan","nodeSubnets":{"pool":"10.0.0.0/8","size":24}}`,
		},
		{
			name: "conflist: the list's name, only multi-bridge plugins",
			config: `{"cniVersion":"1.1.0","name":"net2","plugins":[
				{"type":"multi-bridge","nodeSubnets":{"pool":"10.240.32.0/20","size":24},"ipam":{"type":"host-local"}},
				{"type":"portmap","capabilities":{"portMappings":true}}]}`,
			want: []Network{{Name: "net2", Pool: pfx("10.240.32.0/20"), Size: 24, Source: "nad:demo/net1"}},
		},
		{
			name:    "invalid configuration: the plugin's own error",
			config:  `{"cniVersion":"1.1.0","name":"net1","type":"multi-bridge","nodeSubnets":{"pool":"10.240.16.0/20","size":24},"ipam":{"type":"host-local","subnet":"10.240.16.0/24"}}`,
			wantErr: `nad:demo/net1: invalid "ipam.subnet" "10.240.16.0/24": conflicts with "nodeSubnets"`,
		},
		{
			name:    "no name",
			config:  `{"cniVersion":"1.1.0","type":"multi-bridge","nodeSubnets":{"pool":"10.240.16.0/20","size":24},"ipam":{"type":"host-local"}}`,
			wantErr: `nad:demo/net1: a configuration with "nodeSubnets" needs a "name"`,
		},
		{
			name:   "no name and no nodeSubnets: Multus names it after its NAD",
			config: `{"cniVersion":"1.1.0","type":"multi-bridge","ipam":{"type":"host-local","subnet":"10.240.10.0/24"}}`,
		},
		{
			name:    "no name: the rest is checked all the same",
			config:  `{"cniVersion":"1.1.0","type":"multi-bridge","table":254,"ipam":{"type":"host-local","subnet":"10.240.10.0/24"}}`,
			wantErr: `nad:demo/net1: invalid "table" 254: 254 is the kernel's "main" table`,
		},
		{
			name:    "a name that is a path",
			config:  `{"cniVersion":"1.1.0","name":"../../escape","type":"multi-bridge","nodeSubnets":{"pool":"10.240.16.0/20","size":24},"ipam":{"type":"host-local"}}`,
			wantErr: `nad:demo/net1: invalid "name" "../../escape": CNI allows only letters, digits, '_', '.' and '-' in a network name, starting with a letter or digit; rename the network`,
		},
		{
			name:    "a conflist whose name is a path",
			config:  `{"cniVersion":"1.1.0","name":"../x","plugins":[{"type":"multi-bridge","nodeSubnets":{"pool":"10.240.32.0/20","size":24},"ipam":{"type":"host-local"}}]}`,
			wantErr: `nad:demo/net1 plugins[0]: invalid "name" "../x"`,
		},
		{
			name:    "invalid conflist plugin",
			config:  `{"cniVersion":"1.1.0","name":"net2","plugins":[{"type":"multi-bridge","nodeSubnets":{"pool":"10.240.32.0/20","size":8},"ipam":{"type":"host-local"}}]}`,
			wantErr: `nad:demo/net1 plugins[0]: invalid "nodeSubnets.size" 8: must be longer than the pool's /20`,
		},
		{
			name:    "not JSON",
			config:  `net1`,
			wantErr: `nad:demo/net1: CNI configuration is not a JSON object`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.config), "nad:demo/net1")
			if tc.wantErr != "" {
				assert.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestReadConfDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	write("00-mgmt.conf", `{"cniVersion":"1.1.0","name":"mgmt","type":"multi-bridge","nodeSubnets":{"pool":"10.240.0.0/20","fromNodePodCIDR":true},"ipam":{"type":"host-local"}}`)
	write("10-bad.conflist", `{"name":"bad","plugins":[{"type":"multi-bridge","nodeSubnets":{"pool":"x","size":24},"ipam":{"type":"host-local"}}]}`)
	write("20-cut.conf", `{"cniVersion":"1.1.0","name":"cut","type":"multi-br`)
	require.NoError(t, os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "30-dangling.conf")))
	write("README", `not a config`)
	defs, err := ReadConfDir(dir)
	require.NoError(t, err)
	require.Len(t, defs, 4)
	mgmt := "file:" + filepath.Join(dir, "00-mgmt.conf")
	assert.Equal(t, Definition{Source: mgmt, Nets: []Network{{Name: "mgmt", Pool: pfx("10.240.0.0/20"), FromNodePodCIDR: true, Source: mgmt}}}, defs[0])
	assert.Equal(t, "file:"+filepath.Join(dir, "10-bad.conflist"), defs[1].Source)
	assert.ErrorContains(t, defs[1].Err, `10-bad.conflist plugins[0]: invalid "nodeSubnets.pool" "x"`)
	assert.Equal(t, "bad", defs[1].Network)
	assert.EqualError(t, defs[2].Err, "file:"+filepath.Join(dir, "20-cut.conf")+": CNI configuration is not a JSON object: unexpected end of JSON input")
	assert.Equal(t, "cut", defs[2].Network, "a file cut short still names its network")
	assert.Equal(t, "file:"+filepath.Join(dir, "30-dangling.conf"), defs[3].Source)
	assert.ErrorIs(t, defs[3].Err, os.ErrNotExist)
	assert.Equal(t, "", defs[3].Network, "an unreadable file names no network")

	defs, err = ReadConfDir(filepath.Join(dir, "missing"))
	assert.Empty(t, defs)
	assert.NoError(t, err)

	_, err = ReadConfDir(filepath.Join(dir, "README"))
	assert.EqualError(t, err, "reading CNI conf dir: open "+filepath.Join(dir, "README")+": not a directory")
}

func TestReleaseResponsible(t *testing.T) {
	live := []string{"node-c", "node-a", "node-e"}
	for _, tc := range []struct{ dead, want string }{
		{"node-b", "node-c"},
		{"node-d", "node-e"},
		{"node-f", "node-a"}, // wraps around
		{"aaa", "node-a"},
		{"node-c", "node-e"}, // still in a lagging cache: the next one
	} {
		for _, self := range live {
			assert.Equal(t, self == tc.want, ReleaseResponsible(tc.dead, live, self), "dead %s self %s", tc.dead, self)
		}
	}
	assert.False(t, ReleaseResponsible("x", nil, "node-a"))
}

func TestPodCIDRIn(t *testing.T) {
	pool := pfx("10.240.0.0/20")
	for _, tc := range []struct {
		cidrs []string
		want  string
	}{
		{[]string{"10.240.1.0/24"}, "10.240.1.0/24"},
		{[]string{"fd00:10:240:1::/64", "10.240.2.0/24"}, "10.240.2.0/24"},
		{[]string{"10.244.1.0/24"}, ""}, // outside the pool
		{[]string{"10.240.0.0/16"}, ""}, // larger than the pool
		{[]string{"garbage"}, ""},       // unparsable
		{nil, ""},
	} {
		got, ok := podCIDRIn(tc.cidrs, pool)
		if tc.want == "" {
			assert.False(t, ok, "%v", tc.cidrs)
			continue
		}
		assert.Equal(t, tc.want, got.String())
	}
}

func TestSlimNodeAndChanges(t *testing.T) {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "u1", Labels: map[string]string{"x": "y"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec:       corev1.NodeSpec{PodCIDR: "10.240.1.0/24", PodCIDRs: []string{"10.240.1.0/24"}},
		Status: corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.11"}, {Type: corev1.NodeHostName, Address: "a"}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	slim, err := slimNode(n)
	require.NoError(t, err)
	s := slim.(*corev1.Node)
	assert.Nil(t, s.Labels)
	assert.Nil(t, s.ManagedFields)
	assert.Nil(t, s.Status.Conditions)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("192.0.2.11")}, internalIPs(s))
	assert.Equal(t, []string{"10.240.1.0/24"}, podCIDRs(s))

	heartbeat := s.DeepCopy()
	heartbeat.ResourceVersion = "2"
	assert.False(t, nodeChanged(s, heartbeat))
	moved := s.DeepCopy()
	moved.Status.Addresses[0].Address = "192.0.2.99"
	assert.True(t, nodeChanged(s, moved))
	cidr := s.DeepCopy()
	cidr.Spec.PodCIDRs = []string{"10.240.2.0/24"}
	assert.True(t, nodeChanged(s, cidr))
}

func TestPreferredSlice(t *testing.T) {
	n := Network{Name: "net1", Pool: pfx("10.240.16.0/20"), Size: 24}
	had := nodesubnet.Lease{Network: "net1", Node: "node-a", Pool: pfx("10.240.16.0/20"), Subnet: pfx("10.240.17.0/24")}
	assert.Equal(t, pfx("10.240.17.0/24"), PreferredSlice(&had, n))
	assert.False(t, PreferredSlice(nil, n).IsValid(), "no file")
	for name, mutate := range map[string]func(*nodesubnet.Lease, *Network){
		"the pool changed":    func(_ *nodesubnet.Lease, n *Network) { n.Pool = pfx("10.240.16.0/21") },
		"the size changed":    func(_ *nodesubnet.Lease, n *Network) { n.Size = 25 },
		"podCIDR network":     func(_ *nodesubnet.Lease, n *Network) { n.Size, n.FromNodePodCIDR = 0, true },
		"another network's":   func(l *nodesubnet.Lease, _ *Network) { l.Network = "net2" },
		"slice of other size": func(l *nodesubnet.Lease, _ *Network) { l.Subnet = pfx("10.240.17.0/25") },
	} {
		l, nn := had, n
		mutate(&l, &nn)
		assert.False(t, PreferredSlice(&l, nn).IsValid(), name)
	}
}
