package config

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const base = `"cniVersion":"1.1.0","name":"net1","type":"multi-bridge","ipam":{"type":"host-local","subnet":"10.240.10.0/24"}`

// loadConf loads base with the keys of extra set over it (a key given
// twice is refused, so extra replaces rather than appends).
func loadConf(t *testing.T, extra string, args string) (*Network, error) {
	t.Helper()
	return Load(withFields(t, extra), args)
}

func withFields(t testing.TB, extra string) []byte {
	t.Helper()
	conf := map[string]json.RawMessage{}
	require.NoError(t, json.Unmarshal([]byte("{"+base+"}"), &conf))
	if extra != "" {
		over := map[string]json.RawMessage{}
		require.NoError(t, json.Unmarshal([]byte("{"+extra+"}"), &over), extra)
		for k, v := range over {
			conf[k] = v
		}
	}
	out, err := json.Marshal(conf)
	require.NoError(t, err)
	return out
}

func cniError(t *testing.T, err error) *types.Error {
	t.Helper()
	var e *types.Error
	require.True(t, errors.As(err, &e), "want a *types.Error, got %T: %v", err, err)
	return e
}

// refusedValues are single fields the loader refuses, set over base; they
// also seed FuzzLoad.
var refusedValues = []struct {
	name, extra string
	code        uint
	msg         string
}{
	{"name with a path", `"name":"../../x"`, types.ErrInvalidNetworkConfig, `invalid "name" "../../x": CNI allows only letters, digits, '_', '.' and '-' in a network name, starting with a letter or digit`},
	{"name with a slash", `"name":"a/b"`, types.ErrInvalidNetworkConfig, `invalid "name" "a/b": CNI allows only`},
	{"name dot", `"name":"."`, types.ErrInvalidNetworkConfig, `invalid "name" ".": CNI allows only`},
	{"name dot dot", `"name":".."`, types.ErrInvalidNetworkConfig, `invalid "name" "..": CNI allows only`},
	{"name hidden", `"name":".net1"`, types.ErrInvalidNetworkConfig, `invalid "name" ".net1": CNI allows only`},
	{"name with a space", `"name":"net 1"`, types.ErrInvalidNetworkConfig, `invalid "name" "net 1": CNI allows only`},
	{"name empty", `"name":""`, types.ErrInvalidNetworkConfig, `invalid "name" "": a network needs a name`},
	{"table default", `"table":253`, types.ErrInvalidNetworkConfig, `invalid "table" 253: 253 is the kernel's "default" table`},
	{"table main", `"table":254`, types.ErrInvalidNetworkConfig, `invalid "table" 254: 254 is the kernel's "main" table`},
	{"table local", `"table":255`, types.ErrInvalidNetworkConfig, `invalid "table" 255: 255 is the kernel's "local" table`},
	{"table negative", `"table":-1`, types.ErrInvalidNetworkConfig, `invalid "table" -1: out of range 0-2147483647`},
	{"table too large", `"table":2147483648`, types.ErrInvalidNetworkConfig, `invalid "table" 2147483648: out of range 0-2147483647`},
	{"table not integer", `"table":1.5`, types.ErrDecodingFailure, `invalid "table": got a JSON number 1.5, want an integer`},
	{"table string", `"table":"1"`, types.ErrDecodingFailure, `invalid "table": got a JSON string, want an integer`},
	{"priority 0", `"priority":0`, types.ErrInvalidNetworkConfig, `invalid "priority" 0: preference 0 sorts before "from all lookup local"`},
	{"priority main", `"priority":32766`, types.ErrInvalidNetworkConfig, `invalid "priority" 32766: 32766 is the kernel's "from all lookup main" rule`},
	{"priority default", `"priority":32767`, types.ErrInvalidNetworkConfig, `invalid "priority" 32767: 32767 is the kernel's "from all lookup default" rule`},
	{"priority negative", `"priority":-5`, types.ErrInvalidNetworkConfig, `invalid "priority" -5: out of range 1-32765`},
	{"priority too large", `"priority":40000`, types.ErrInvalidNetworkConfig, `invalid "priority" 40000: out of range 1-32765`},
	{"management with table", `"isManagementNetwork":true,"table":3`, types.ErrInvalidNetworkConfig, `invalid "table" 3: contradicts "isManagementNetwork": true`},
	{"bridge too long", `"bridge":"abcdefghijklmnop"`, types.ErrInvalidNetworkConfig, `invalid "bridge" "abcdefghijklmnop"`},
	{"bridge with slash", `"bridge":"br/0"`, types.ErrInvalidNetworkConfig, `invalid "bridge" "br/0"`},
	{"mtu too small", `"mtu":60`, types.ErrInvalidNetworkConfig, `invalid "mtu" 60: out of range 68-65535`},
	{"mtu wrong type", `"mtu":"1500"`, types.ErrDecodingFailure, `invalid "mtu": got a JSON string, want an integer`},
	{"hairpin wrong type", `"hairpinMode":"yes"`, types.ErrDecodingFailure, `invalid "hairpinMode": got a JSON string, want a boolean`},
	{"dns wrong type", `"dns":"10.0.0.1"`, types.ErrDecodingFailure, `invalid "dns": got a JSON string, want an object`},
	{"vlan", `"vlan":10`, types.ErrUnsupportedField, `"vlan": 10 is not supported yet`},
	{"vlanTrunk", `"vlanTrunk":[{"id":5}]`, types.ErrUnsupportedField, `"vlanTrunk" is not supported yet`},
	{"macspoofchk", `"macspoofchk":true`, types.ErrUnsupportedField, `"macspoofchk": true is not supported yet`},
	{"masq backend", `"ipMasqBackend":"pf"`, types.ErrInvalidNetworkConfig, `invalid "ipMasqBackend" "pf": unknown backend`},
	{"log level", `"logLevel":"loud"`, types.ErrInvalidNetworkConfig, `invalid "logLevel" "loud": unknown level`},
	{"bad mac", `"runtimeConfig":{"mac":"zz:00"}`, types.ErrInvalidNetworkConfig, `invalid "runtimeConfig.mac" "zz:00": not an Ethernet MAC address`},
	{"multicast mac", `"runtimeConfig":{"mac":"01:00:5e:00:00:01"}`, types.ErrInvalidNetworkConfig, `invalid "runtimeConfig.mac" "01:00:5e:00:00:01": is a multicast address`},
	{"bad ip", `"runtimeConfig":{"ips":["10.240.10.300/24"]}`, types.ErrInvalidNetworkConfig, `invalid "runtimeConfig.ips" "10.240.10.300/24": not an IP address`},
	{"pool not a network", `"nodeSubnets":{"pool":"10.240.1.0/16","size":24}`, types.ErrInvalidNetworkConfig, `invalid "nodeSubnets.pool" "10.240.1.0/16": not a network prefix`},
	{"node slices with an ipam subnet", `"nodeSubnets":{"pool":"10.240.0.0/16","size":24}`, types.ErrInvalidNetworkConfig, `invalid "ipam.subnet" "10.240.10.0/24": conflicts with "nodeSubnets"`},
	{"podCIDR with size", `"nodeSubnets":{"pool":"10.240.0.0/16","size":24,"fromNodePodCIDR":true}`, types.ErrInvalidNetworkConfig, `invalid "nodeSubnets.size" 24: is set by the Node's spec.podCIDR`},
	{"slice not inside pool", `"nodeSubnets":{"pool":"10.240.0.0/16","size":16}`, types.ErrInvalidNetworkConfig, `invalid "nodeSubnets.size" 16: must be longer than the pool's /16`},
}

func TestRefusedValues(t *testing.T) {
	cases := refusedValues
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadConf(t, c.extra, "")
			e := cniError(t, err)
			assert.Equal(t, c.code, e.Code)
			assert.Contains(t, e.Msg, c.msg)
			if c.code == types.ErrInvalidNetworkConfig {
				assert.NotEmpty(t, e.Details, "every refusal says what to do")
			}
		})
	}
}

func TestLayer2NeedsNoIPAMButRefusesL3Fields(t *testing.T) {
	n, err := Load([]byte(`{"cniVersion":"1.0.0","name":"l2","type":"multi-bridge","bridge":"br-l2"}`), "")
	require.NoError(t, err)
	assert.False(t, n.Layer3)
	for _, extra := range []string{`"isGateway":true`, `"ipMasq":true`, `"isDefaultGateway":true`, `"table":4`, `"priority":110`} {
		_, err := Load([]byte(`{"cniVersion":"1.0.0","name":"l2","type":"multi-bridge",`+extra+`}`), "")
		e := cniError(t, err)
		assert.Equal(t, types.ErrInvalidNetworkConfig, e.Code, extra)
		assert.Contains(t, e.Msg, `"ipam" has no "type"`, extra)
	}
}

func TestRouting(t *testing.T) {
	cases := []struct {
		extra string
		want  Routing
	}{
		{``, Routing{Mode: RoutingAuto}},
		{`"table":0`, Routing{Mode: RoutingMain}},
		{`"table":0,"priority":100`, Routing{Mode: RoutingMain, Priority: 100}},
		{`"isManagementNetwork":true`, Routing{Mode: RoutingMain}},
		{`"isManagementNetwork":true,"table":0`, Routing{Mode: RoutingMain}},
		{`"table":1,"priority":101`, Routing{Mode: RoutingTable, Table: 1, Priority: 101}},
		{`"table":252`, Routing{Mode: RoutingTable, Table: 252}},
		{`"table":256`, Routing{Mode: RoutingTable, Table: 256}},
		{`"table":2147483647,"priority":32765`, Routing{Mode: RoutingTable, Table: 2147483647, Priority: 32765}},
		{`"priority":1`, Routing{Mode: RoutingAuto, Priority: 1}},
	}
	for _, c := range cases {
		n, err := loadConf(t, c.extra, "")
		require.NoError(t, err, c.extra)
		assert.Equal(t, c.want, n.Routing, c.extra)
	}
}

func TestDefaults(t *testing.T) {
	n, err := loadConf(t, `"isDefaultGateway":true`, "")
	require.NoError(t, err)
	assert.Equal(t, DefaultBridge, n.Bridge)
	assert.True(t, n.Conf.IsGateway, "isDefaultGateway implies isGateway")
	assert.Equal(t, DefaultDataDir, n.DataDir())
	assert.Equal(t, DefaultRuntimeDir, n.RuntimeDir())
}

// The seed's management network config, as the student project wrote it.
func TestSeedManagementConfig(t *testing.T) {
	n, err := Load([]byte(`{"cniVersion":"0.3.1","name":"mgmt","type":"multi-bridge","bridge":"cni0","isManagementNetwork":true,
		"isDefaultGateway":true,"forceAddress":false,"ipMasq":true,"hairpinMode":true,
		"ipam":{"type":"host-local","subnet":"10.240.0.0/24"},"table":0,"priority":100}`), "")
	require.NoError(t, err)
	assert.Equal(t, RoutingMain, n.Routing.Mode)
	assert.Equal(t, "cni0", n.Bridge)
	assert.True(t, n.Conf.HairpinMode && n.Conf.IPMasq && n.Conf.IsDefaultGateway)
}

// The reference bridge plugin defaults preserveDefaultVlan to true; it only
// matters with "vlan", so it is accepted either way.
func TestPreserveDefaultVlanAccepted(t *testing.T) {
	for _, v := range []string{"true", "false"} {
		_, err := loadConf(t, `"preserveDefaultVlan":`+v, "")
		assert.NoError(t, err, v)
	}
}

func TestUnknownFieldsIgnored(t *testing.T) {
	// What Multus and libcni add, re-ordered.
	n, err := Load([]byte(`{"deviceID":"0000:00:1f.0","pciBusID":"x","args":{"cni":{"foo":"bar"}},"table":1,"priority":101,
		"type":"multi-bridge","name":"net1","ipam":{"type":"host-local","subnet":"10.240.10.0/24"},"cniVersion":"1.0.0","somethingNew":{"a":1}}`), "")
	require.NoError(t, err)
	assert.Equal(t, Routing{Mode: RoutingTable, Table: 1, Priority: 101}, n.Routing)
}

func TestPodIdentityFromMultusArgs(t *testing.T) {
	n, err := loadConf(t, "", "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=;K8S_POD_UID=;IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;FOO=bar")
	require.NoError(t, err)
	assert.Equal(t, Pod{Namespace: "ns", Name: "p"}, n.Pod)
	assert.Equal(t, "ns/p", n.Pod.String())
	assert.Equal(t, "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=;K8S_POD_UID=;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;FOO=bar", n.IPAMArgs)
}

// Known failure 5: Multus passes a dual-stack static request as a comma list
// in IP=, which host-local cannot parse. It travels in runtimeConfig.ips.
func TestDualStackStaticIPsFromMultus(t *testing.T) {
	n, err := Load([]byte(`{"cniVersion":"1.0.0","name":"ds","type":"multi-bridge",
		"ipam":{"type":"host-local","ranges":[[{"subnet":"10.20.0.0/24"}],[{"subnet":"fd00::/64"}]]}}`),
		"IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;IP=10.20.0.52/24,fd00::5/64;MAC=0a:58:0a:14:00:34")
	require.NoError(t, err)
	assert.Equal(t, []string{"10.20.0.52/24", "fd00::5/64"}, n.IPs)
	assert.Equal(t, "0a:58:0a:14:00:34", n.MAC.String())
	assert.Equal(t, "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;MAC=0a:58:0a:14:00:34", n.IPAMArgs)

	raw, err := n.IPAMConf(nil)
	require.NoError(t, err)
	var got struct {
		RuntimeConfig struct {
			IPs []string `json:"ips"`
		} `json:"runtimeConfig"`
		IPAM map[string]any `json:"ipam"`
	}
	require.NoError(t, json.Unmarshal(raw, &got))
	assert.Equal(t, []string{"10.20.0.52/24", "fd00::5/64"}, got.RuntimeConfig.IPs)
	assert.Equal(t, "host-local", got.IPAM["type"])
}

func TestStaticIPSourcesMergedWithoutDuplicates(t *testing.T) {
	n, err := loadConf(t, `"runtimeConfig":{"ips":["10.240.10.5/24"]},"args":{"cni":{"ips":["10.240.10.5/24","10.240.10.6"],"other":1}}`, "IP=10.240.10.5/24")
	require.NoError(t, err)
	assert.Equal(t, []string{"10.240.10.5/24", "10.240.10.6"}, n.IPs)
	raw, err := n.IPAMConf(nil)
	require.NoError(t, err)
	assert.JSONEq(t, `{"cni":{"other":1}}`, string(mustField(t, raw, "args")))
	assert.JSONEq(t, `{"ips":["10.240.10.5/24","10.240.10.6"]}`, string(mustField(t, raw, "runtimeConfig")))
}

func TestMACPrecedence(t *testing.T) {
	n, err := loadConf(t, `"runtimeConfig":{"mac":"0a:00:00:00:00:01"},"args":{"cni":{"mac":"0a:00:00:00:00:02"}}`, "MAC=0a:00:00:00:00:03")
	require.NoError(t, err)
	assert.Equal(t, "0a:00:00:00:00:01", n.MAC.String())
	n, err = loadConf(t, "", "MAC=0a:00:00:00:00:03")
	require.NoError(t, err)
	assert.Equal(t, "0a:00:00:00:00:03", n.MAC.String())
}

func TestIPAMConfWithNodeSlice(t *testing.T) {
	n, err := Load([]byte(`{"cniVersion":"1.0.0","name":"net1","type":"multi-bridge","nodeSubnets":{"pool":"10.240.0.0/16","size":24},
		"ipam":{"type":"host-local","routes":[{"dst":"0.0.0.0/0"}]}}`), "")
	require.NoError(t, err)
	assert.Equal(t, netip.MustParsePrefix("10.240.0.0/16"), *n.Pool)
	slice := netip.MustParsePrefix("10.240.10.0/24")
	raw, err := n.IPAMConf(&slice)
	require.NoError(t, err)
	assert.JSONEq(t, `{"type":"host-local","routes":[{"dst":"0.0.0.0/0"}],"subnet":"10.240.10.0/24"}`, string(mustField(t, raw, "ipam")))
}

func TestArgsParser(t *testing.T) {
	a := ParseArgs("A=1;;B;C=x=y;A=2;IP=1.2.3.4;IgnoreUnknown=true")
	assert.Equal(t, "2", a.Get("A"))
	assert.Equal(t, "", a.Get("B"))
	assert.Equal(t, "x=y", a.Get("C"))
	assert.Equal(t, "IgnoreUnknown=1;A=1;A=2", a.ForIPAM(), "only what types.LoadArgs parses, never failing on unknown keys")
	assert.Equal(t, "", ParseArgs("").ForIPAM())
}

func mustField(t *testing.T, raw []byte, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &m))
	return m[key]
}

func TestFamilies(t *testing.T) {
	cases := []struct {
		conf          string
		v4, v6, known bool
	}{
		{`{"name":"a","ipam":{"type":"host-local","subnet":"10.240.10.0/24"}}`, true, false, true},
		{`{"name":"a","ipam":{"type":"host-local","ranges":[[{"subnet":"10.240.10.0/24"}],[{"subnet":"fd00::/64"}]]}}`, true, true, true},
		{`{"name":"a","ipam":{"type":"static","addresses":[{"address":"fd00::5/64"}]}}`, false, true, true},
		{`{"name":"a","nodeSubnets":{"pool":"10.240.0.0/16","size":24},"ipam":{"type":"host-local"}}`, true, false, true},
		{`{"name":"a","ipam":{"type":"dhcp"}}`, false, false, false},
	}
	for _, c := range cases {
		n, err := Load([]byte(c.conf), "")
		require.NoError(t, err, c.conf)
		v4, v6, known := n.Families()
		assert.Equal(t, []bool{c.v4, c.v6, c.known}, []bool{v4, v6, known}, c.conf)
	}
}

// DEL and GC must work with what ADD would refuse now, so the attachment's
// addresses are released.
func TestLoadLenient(t *testing.T) {
	n, problems, err := LoadLenient([]byte(`{`+base+`,"table":254,"vlan":5,"mtu":"1500"}`), "IP=10.240.10.90/24,bogus;MAC=zz")
	require.NoError(t, err)
	var msgs []string
	for _, p := range problems {
		msgs = append(msgs, p.Error())
	}
	assert.Len(t, problems, 5, "%v", msgs)
	assert.Equal(t, "host-local", n.Conf.IPAM.Type, "what DEL needs survives")
	assert.Equal(t, "net1", n.Conf.Name)
	_, _, err = LoadLenient([]byte(`[1]`), "")
	assert.Error(t, err, "not even an object")
}

func TestMissingVersionGetsTheNewestResult(t *testing.T) {
	n, err := Load([]byte(`{"name":"net1","type":"multi-bridge","ipam":{"type":"host-local","subnet":"10.240.10.0/24"}}`), "")
	require.NoError(t, err)
	assert.Equal(t, LatestVersion, n.ResultVersion())
	n, err = loadConf(t, "", "")
	require.NoError(t, err)
	assert.Equal(t, "1.1.0", n.ResultVersion())
}

// Every name CNI accepts is accepted, whatever else it looks like.
func TestNamesCNIAccepts(t *testing.T) {
	for _, name := range []string{"net1", "Net_1", "my.net", "a..b", "0-x", "a.", strings.Repeat("n", 300)} {
		n, err := loadConf(t, `"name":`+strconv.Quote(name), "")
		require.NoError(t, err, name)
		assert.Equal(t, name, n.Conf.Name)
	}
}
