package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/pkg/policy"
	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// badInput is one entry of the hostile-input catalogue: a NAD written by a
// namespace user (or a runtime gone wrong) that the plugin must refuse with
// a clear CNI error, leaving node and pod exactly as they were.
type badInput struct {
	name string
	// conf sets (or, with a nil value, deletes) fields of a valid network
	// (the seed's net1 with ipMasq, so a partial ADD would show on the
	// node's firewall too).
	conf map[string]any
	// stdin replaces the configuration text entirely.
	stdin func(b *bed) []byte
	// env sets (or, with "", unsets) the runtime's variables.
	env func(b *bed) map[string]string
	// setup prepares the node or pod before the "before" snapshot.
	setup func(t *testing.T, b *bed)
	// policy is the node policy document; "" is the test policy, "absent"
	// a node without a policy file.
	policy string
	code   uint
	// msg is the error message, with {pod}, {node} and {data} standing for
	// the bed's paths.
	msg string
}

// validHostileBase is the network every catalogue entry starts from.
func validHostileBase() map[string]any {
	return net1(map[string]any{"ipMasq": true})
}

// withTestDirs is a policy document that also lets the bed's temporary
// directories be used, as the test policy does.
func withTestDirs(rules string) string {
	dirs, _ := json.Marshal([]string{filepath.Clean(os.TempDir())})
	return `{"allowedDirectories": ` + string(dirs) + `, ` + rules + `}`
}

func nestedJSON(depth int) string {
	return strings.Repeat("[", depth) + strings.Repeat("]", depth)
}

func hostileCatalogue() []badInput {
	envs := func(kv ...string) func(*bed) map[string]string {
		return func(*bed) map[string]string {
			m := map[string]string{}
			for i := 0; i < len(kv); i += 2 {
				m[kv[i]] = kv[i+1]
			}
			return m
		}
	}
	raw := func(s string) func(*bed) []byte { return func(*bed) []byte { return []byte(s) } }
	// withText is the valid configuration with text spliced in before its
	// closing brace.
	withText := func(text string) func(*bed) []byte {
		return func(b *bed) []byte {
			valid := b.conf(validHostileBase()).Bytes
			return append(append(bytes.TrimSuffix(bytes.TrimSpace(valid), []byte("}")), []byte(","+text)...), '}')
		}
	}
	nodeLink := func(args ...string) func(*testing.T, *bed) {
		return func(t *testing.T, b *bed) {
			nettest.MustRun(t, b.node, "ip", append([]string{"link", "add"}, args...)...)
		}
	}
	const invalidConf, decoding, badEnv, unsupported, incompatible, internal = types.ErrInvalidNetworkConfig, types.ErrDecodingFailure,
		types.ErrInvalidEnvironmentVariables, types.ErrUnsupportedField, types.ErrIncompatibleCNIVersion, types.ErrInternal
	return []badInput{
		// The bridge: a valid name, and never an interface that is not a bridge.
		{name: "bridge name too long", conf: map[string]any{"bridge": "abcdefghijklmnop"}, code: invalidConf,
			msg: `invalid "bridge" "abcdefghijklmnop": interface name is too long`},
		{name: "bridge name with a slash", conf: map[string]any{"bridge": "br/0"}, code: invalidConf,
			msg: `invalid "bridge" "br/0": interface name contains / or : or whitespace characters`},
		{name: "bridge name with a space", conf: map[string]any{"bridge": "br 0"}, code: invalidConf,
			msg: `invalid "bridge" "br 0": interface name contains / or : or whitespace characters`},
		{name: "bridge name dot", conf: map[string]any{"bridge": "."}, code: invalidConf,
			msg: `invalid "bridge" ".": interface name is . or ..`},
		{name: "bridge name dot dot", conf: map[string]any{"bridge": ".."}, code: invalidConf,
			msg: `invalid "bridge" "..": interface name is . or ..`},
		{name: "bridge is the node's NIC", conf: map[string]any{"bridge": "uplink"}, code: invalidConf,
			setup: nodeLink("uplink", "type", "veth", "peer", "name", "uplinkp"),
			msg:   `invalid "bridge" "uplink": interface "uplink" exists on the node and is a veth, not a bridge`},
		{name: "bridge is lo", conf: map[string]any{"bridge": "lo"}, code: invalidConf,
			msg: `invalid "bridge" "lo": interface "lo" exists on the node and is a device, not a bridge`},
		{name: "forceAddress on a bridge multi-bridge did not create", conf: map[string]any{"forceAddress": true}, code: invalidConf,
			setup: adminBridge,
			msg:   "cni1 already has 10.240.10.254/24, not the gateway 10.240.10.1/24 of this network, and forceAddress only replaces addresses on bridges multi-bridge created; remove the address by hand or use another bridge"},
		{name: "subnet of another bridge", code: invalidConf,
			setup: func(t *testing.T, b *bed) {
				nodeLink("cniother", "type", "bridge")(t, b)
				nettest.MustRun(t, b.node, "ip", "addr", "add", "10.240.10.1/24", "dev", "cniother")
			},
			msg: `subnet 10.240.10.0/24 of bridge "cni1" overlaps 10.240.10.1/24 on bridge "cniother"`},
		{name: "subnet of the node's LAN", code: invalidConf,
			setup: func(t *testing.T, b *bed) {
				nodeLink("uplink", "type", "veth", "peer", "name", "uplinkp")(t, b)
				nettest.MustRun(t, b.node, "ip", "addr", "add", "10.240.10.200/25", "dev", "uplink")
			},
			msg: `subnet 10.240.10.0/24 of bridge "cni1" overlaps 10.240.10.200/25 on interface "uplink"`},

		{name: "subnet the node routes through its uplink", conf: map[string]any{"ipam": nettest.HostLocal("203.0.113.0/28", nil)}, code: invalidConf,
			setup: func(t *testing.T, b *bed) {
				nodeLink("uplink", "type", "veth", "peer", "name", "uplinkp")(t, b)
				nettest.MustRun(t, b.node, "ip", "addr", "add", "198.51.100.1/24", "dev", "uplink")
				nettest.MustRun(t, b.node, "ip", "link", "set", "uplink", "up")
				nettest.MustRun(t, b.node, "ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.254")
			},
			msg: `subnet 203.0.113.0/28 of bridge "cni1" overlaps the node's route to 203.0.113.0/24 via 198.51.100.254 dev uplink`},
		{name: "promiscMode on a bridge multi-bridge did not create", conf: map[string]any{"promiscMode": true}, code: invalidConf,
			setup: nodeLink("cni1", "type", "bridge"),
			msg:   `invalid "bridge" "cni1": promiscMode would change the existing bridge "cni1", which multi-bridge did not create`},
		{name: "bridge named default", conf: map[string]any{"bridge": "default"}, code: invalidConf,
			msg: `invalid "bridge" "default": the kernel reserves the name for its per-interface settings`},
		{name: "IPAM plugin missing after the bridge was made", conf: map[string]any{"ipam": map[string]any{"type": "no-such-ipam", "subnet": "10.240.10.0/24"}},
			code: types.ErrPluginNotAvailable, msg: `IPAM plugin "no-such-ipam" not found in CNI_PATH`},

		// Plugin types are plain names, looked up in CNI_PATH.
		{name: "ipam type is an absolute path", conf: map[string]any{"ipam": map[string]any{"type": "/bin/sh", "subnet": "10.240.10.0/24"}}, code: invalidConf,
			msg: `invalid "ipam.type" "/bin/sh": a plugin type is the plain file name of a binary in CNI_PATH (letters, digits, '.', '_', '-'; no '/' and no leading '.')`},
		{name: "ipam type climbs out of CNI_PATH", conf: map[string]any{"ipam": map[string]any{"type": "../../../bin/sh", "subnet": "10.240.10.0/24"}}, code: invalidConf,
			msg: `invalid "ipam.type" "../../../bin/sh": a plugin type is the plain file name`},
		{name: "ipam type dot dot", conf: map[string]any{"ipam": map[string]any{"type": "..", "subnet": "10.240.10.0/24"}}, code: invalidConf,
			msg: `invalid "ipam.type" "..": a plugin type is the plain file name`},
		{name: "plugin type with a slash", conf: map[string]any{"type": "sub/multi-bridge"}, code: invalidConf,
			msg: `invalid "type" "sub/multi-bridge": a plugin type is the plain file name`},

		// Files only where the node policy allows.
		{name: "logFile into /etc under the default policy", conf: map[string]any{"logFile": "/etc/cron.d/multi-bridge"}, policy: "absent", code: invalidConf,
			msg: `"logFile" "/etc/cron.d/multi-bridge" is not allowed by rule "allowedDirectories" of the default node policy, which allows [/var/lib/cni/multi-bridge /var/lib/cni/networks /run/multi-bridge /var/run/multi-bridge /var/log/multi-bridge]`},
		{name: "dataDir into /etc under the default policy", conf: map[string]any{"dataDir": "/etc/multi-bridge"}, policy: "absent", code: invalidConf,
			msg: `"dataDir" "/etc/multi-bridge" is not allowed by rule "allowedDirectories" of the default node policy`},
		{name: "logFile through a symbolic link out of the allowed directories", code: invalidConf,
			setup: func(t *testing.T, b *bed) {
				require.NoError(t, os.Symlink("/etc", filepath.Join(b.dirs.Data, "link")))
			},
			stdin: func(b *bed) []byte {
				return b.conf(applyFields(validHostileBase(), map[string]any{"logFile": filepath.Join(b.dirs.Data, "link", "multi-bridge-hostile.log")})).Bytes
			},
			msg: `"logFile" "{data}/link/multi-bridge-hostile.log" (leading to "/etc/multi-bridge-hostile.log") is not allowed by rule "allowedDirectories"`},
		{name: "runtimeDir relative", conf: map[string]any{"runtimeDir": "run/multi-bridge"}, code: invalidConf,
			msg: `invalid "runtimeDir" "run/multi-bridge": not an absolute path`},
		{name: "ipam dataDir climbing with dot dot", conf: map[string]any{"ipam": map[string]any{"type": "host-local", "subnet": "10.240.10.0/24", "dataDir": "/var/lib/cni/../../etc"}}, code: invalidConf,
			msg: `invalid "ipam.dataDir" "/var/lib/cni/../../etc": contains ".."`},

		// The node policy.
		{name: "bridge outside the policy", policy: withTestDirs(`"allowedBridges": ["mb-*"]`), code: invalidConf,
			msg: `"bridge" "cni1" is not allowed by rule "allowedBridges" of {policy}, which allows ["mb-*"]`},
		{name: "subnet outside the policy", policy: withTestDirs(`"allowedSubnets": ["10.240.64.0/18"]`), code: invalidConf,
			msg: `"ipam.subnet" 10.240.10.0/24 is not allowed by rule "allowedSubnets" of {policy}, which allows [10.240.64.0/18]`},
		{name: "requested IP outside the policy", policy: withTestDirs(`"allowedSubnets": ["10.240.10.0/25"]`), code: invalidConf,
			conf: map[string]any{"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]any{{{"subnet": "10.240.10.0/25"}}}}, "runtimeConfig": map[string]any{"ips": []string{"10.240.10.200/24"}}},
			msg:  `"static IP request" 10.240.10.200/32 is not allowed by rule "allowedSubnets"`},
		{name: "ipam type outside the policy", policy: withTestDirs(`"allowedIPAMTypes": ["static"]`), code: invalidConf,
			msg: `"ipam.type" "host-local" is not allowed by rule "allowedIPAMTypes" of {policy}, which allows ["static"]`},
		{name: "table outside the policy", policy: withTestDirs(`"tables": {"min": 100, "max": 199}`), code: invalidConf,
			msg: `"table" 1 is not allowed by rule "tables" of {policy}, which allows 100-199`},
		{name: "automatic table outside the policy", policy: withTestDirs(`"tables": {"min": 1000, "max": 1999}`), conf: map[string]any{"table": nil}, code: invalidConf,
			msg: `"table" 100 is not allowed by rule "tables" of {policy}, which allows 1000-1999`},
		{name: "priority outside the policy", policy: withTestDirs(`"priorities": {"min": 1000, "max": 1999}`), code: invalidConf,
			msg: `"priority" 101 is not allowed by rule "priorities" of {policy}, which allows 1000-1999`},
		{name: "ipMasq against the policy", policy: withTestDirs(`"allowIPMasq": false`), code: invalidConf,
			msg: `"ipMasq" true is not allowed by rule "allowIPMasq" of {policy}, which allows false`},
		{name: "policy file is not JSON", policy: `{"allowedBridges": [`, code: internal,
			msg: `node policy {policy} is unusable: unexpected EOF`},
		{name: "policy file with a misspelt rule", policy: `{"allowedBridge": ["mb-*"]}`, code: internal,
			msg: `node policy {policy} is unusable: json: unknown field "allowedBridge"`},

		// CNI_IFNAME and CNI_NETNS.
		{name: "ifname lo", env: envs("CNI_IFNAME", "lo"), code: badEnv,
			msg: `CNI_IFNAME "lo" is the pod's loopback interface`},
		{name: "ifname too long", env: envs("CNI_IFNAME", "net1234567890123"), code: badEnv,
			msg: `interface name is too long`},
		{name: "ifname all", env: envs("CNI_IFNAME", "all"), code: badEnv,
			msg: `CNI_IFNAME "all" is reserved: the kernel keeps its per-interface settings there`},
		{name: "ifname with a slash", env: envs("CNI_IFNAME", "net/1"), code: badEnv,
			msg: `interface name contains / or : or whitespace characters`},
		{name: "ifname taken in the pod", setup: func(t *testing.T, b *bed) {
			nettest.MustRun(t, b.pod, "ip", "link", "add", "net1", "type", "veth", "peer", "name", "other0")
		}, code: badEnv,
			msg: `CNI_IFNAME "net1": the pod already has that interface, not created by multi-bridge for network "net1" and container c-hostile`},
		{name: "ifname of another network's attachment in the pod", setup: func(t *testing.T, b *bed) {
			b.mustAdd(b.conf(map[string]any{"name": "other", "bridge": "cnio", "isGateway": true, "ipam": nettest.HostLocal("10.240.30.0/24", nil)}), "net1")
		}, code: badEnv,
			msg: `CNI_IFNAME "net1": the pod already has that interface, not created by multi-bridge for network "net1" and container c-hostile`},
		{name: "netns is a regular file", env: func(b *bed) map[string]string {
			return map[string]string{"CNI_NETNS": filepath.Join(b.dirs.Data, "not-a-netns")}
		}, setup: func(t *testing.T, b *bed) {
			require.NoError(t, os.WriteFile(filepath.Join(b.dirs.Data, "not-a-netns"), nil, 0o644))
		}, code: badEnv,
			msg: `CNI_NETNS "{data}/not-a-netns" is not a usable network namespace: unknown FS magic on "{data}/not-a-netns": ef53`},
		{name: "netns is a directory", env: func(b *bed) map[string]string { return map[string]string{"CNI_NETNS": b.dirs.Data} }, code: badEnv,
			msg: `CNI_NETNS "{data}" is not a usable network namespace: unknown FS magic on "{data}"`},
		{name: "netns is the node's own", env: func(b *bed) map[string]string { return map[string]string{"CNI_NETNS": b.node.Path()} }, code: badEnv,
			msg: `CNI_NETNS "{node}" is the node's own network namespace`},
		{name: "netns missing", env: envs("CNI_NETNS", ""), code: badEnv,
			msg: `required env variables [CNI_NETNS] missing`},

		// Numbers.
		{name: "table as a string", conf: map[string]any{"table": "1"}, code: decoding,
			msg: `invalid "table": got a JSON string, want an integer`},
		{name: "table negative", conf: map[string]any{"table": -1}, code: invalidConf,
			msg: `invalid "table" -1: out of range 0-2147483647`},
		{name: "table main", conf: map[string]any{"table": 254}, code: invalidConf,
			msg: `invalid "table" 254: 254 is the kernel's "main" table`},
		{name: "priority zero", conf: map[string]any{"priority": 0}, code: invalidConf,
			msg: `invalid "priority" 0: preference 0 sorts before "from all lookup local" and would break local delivery in the pod`},
		{name: "priority above the kernel's rules", conf: map[string]any{"priority": 40000}, code: invalidConf,
			msg: `invalid "priority" 40000: out of range 1-32765`},
		{name: "mtu too small", conf: map[string]any{"mtu": 67}, code: invalidConf,
			msg: `invalid "mtu" 67: out of range 68-65535`},
		{name: "mtu too large", conf: map[string]any{"mtu": 65536}, code: invalidConf,
			msg: `invalid "mtu" 65536: out of range 68-65535`},
		{name: "mtu above the bridge's", conf: map[string]any{"mtu": 9000}, setup: nodeLink("cni1", "type", "bridge"), code: invalidConf,
			msg: `invalid "bridge" "cni1": MTU 9000 is above the MTU 1500 of the existing bridge "cni1"`},
		{name: "vlan out of range", conf: map[string]any{"vlan": 4095}, code: invalidConf,
			msg: `invalid "vlan" 4095: out of range 0-4094`},
		{name: "vlan negative", conf: map[string]any{"vlan": -1}, code: invalidConf,
			msg: `invalid "vlan" -1: out of range 0-4094`},
		{name: "vlan trunk", conf: map[string]any{"vlanTrunk": []map[string]int{{"id": 5}}}, code: unsupported,
			msg: `"vlanTrunk" is not supported yet by multi-bridge`},
		{name: "subnet not a subnet", conf: map[string]any{"ipam": nettest.HostLocal("10.240.10.0/33", nil)}, code: invalidConf,
			msg: `invalid "ipam.subnet" "10.240.10.0/33": not a subnet`},
		{name: "gateway outside the subnet", conf: map[string]any{"ipam": nettest.HostLocal("10.240.10.0/24", map[string]any{"gateway": "10.240.11.1"})}, code: invalidConf,
			msg: `invalid "ipam.gateway" "10.240.11.1": outside the subnet 10.240.10.0/24`},
		{name: "range end before its start", code: invalidConf,
			conf: map[string]any{"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]any{{{"subnet": "10.240.10.0/24", "rangeStart": "10.240.10.50", "rangeEnd": "10.240.10.10"}}}}},
			msg:  `invalid "ipam.ranges[0][0].rangeEnd" "10.240.10.10": comes before rangeStart 10.240.10.50`},
		{name: "static gateway outside its address's subnet", code: invalidConf,
			conf: map[string]any{"ipam": map[string]any{"type": "static", "addresses": []map[string]any{{"address": "10.240.10.5/24", "gateway": "192.0.2.1"}}}},
			msg:  `invalid "ipam.addresses[0].gateway" "192.0.2.1": not an address inside 10.240.10.0/24`},

		// Oversized and malformed text.
		{name: "stdin over 1 MiB", stdin: withText(`"padding": "` + strings.Repeat("x", 1<<20) + `"`), code: decoding,
			msg: `network configuration on stdin is over the limit of 1048576 bytes (1 MiB)`},
		{name: "invalid JSON", stdin: raw(`{"name": "net1", "type": "multi-bridge",`), code: decoding,
			msg: `error unmarshall network config: unexpected end of JSON input`},
		{name: "not an object", stdin: raw(`["net1"]`), code: decoding,
			msg: `error unmarshall network config: json: cannot unmarshal array into Go value of type struct { Name string "json:\"name\"" }`},
		{name: "empty stdin", stdin: raw(``), code: decoding,
			msg: `error unmarshall network config: unexpected end of JSON input`},
		{name: "duplicated key", stdin: withText(`"table": 7`), code: decoding,
			msg: `ambiguous network configuration: key "table" appears twice`},
		{name: "keys differing only in case", stdin: withText(`"Table": 7`), code: decoding,
			msg: `ambiguous network configuration: keys "table" and "Table" differ only in case, and JSON readers disagree on which one counts`},
		{name: "duplicated key inside ipam", code: decoding, stdin: func(b *bed) []byte {
			return bytes.Replace(b.conf(validHostileBase()).Bytes, []byte(`"subnet":"10.240.10.0/24"`), []byte(`"subnet":"10.240.10.0/24","subnet":"0.0.0.0/0"`), 1)
		}, msg: `ambiguous network configuration: key "ipam.subnet" appears twice`},
		{name: "ipam spelt in capitals", code: decoding, stdin: func(b *bed) []byte {
			return bytes.Replace(b.conf(validHostileBase()).Bytes, []byte(`"ipam":`), []byte(`"IPAM":`), 1)
		}, msg: `ambiguous network configuration: key "IPAM" stands for "ipam"`},
		{name: "keys folding alike beyond ASCII", stdin: withText("\"ipMa\u017fq\": false"), code: decoding,
			msg: "ambiguous network configuration: keys \"ipMasq\" and \"ipMa\u017fq\" differ only in case"},
		{name: "deeply nested", stdin: withText(`"deep": ` + nestedJSON(40)), code: decoding,
			msg: `network configuration nests deeper than 32 levels (at deep[][][][][][][][][][][][][][][][][][][][][][][][][][][][][][])`},
		{name: "not UTF-8", stdin: withText("\"note\": \"caf\xe9\""), code: decoding,
			msg: `network configuration is not valid UTF-8 (first bad byte at offset`},

		// The runtime's environment and the spec version.
		{name: "no CNI_COMMAND", env: envs("CNI_COMMAND", ""), code: badEnv,
			msg: `required env variables [CNI_COMMAND] missing`},
		{name: "no CNI_CONTAINERID", env: envs("CNI_CONTAINERID", ""), code: badEnv,
			msg: `required env variables [CNI_CONTAINERID] missing`},
		{name: "container ID with a path", env: envs("CNI_CONTAINERID", "../etc"), code: badEnv,
			msg: `invalid characters in containerID`},
		{name: "unknown command", env: envs("CNI_COMMAND", "FROB"), code: badEnv,
			msg: `unknown CNI_COMMAND: FROB`},
		{name: "unsupported cniVersion", conf: map[string]any{"cniVersion": "9.9.9"}, code: incompatible,
			msg: `incompatible CNI versions`},
		{name: "malformed MAC in CNI_ARGS", env: envs("CNI_ARGS", "IgnoreUnknown=1;MAC=zz:zz"), code: invalidConf,
			msg: `invalid CNI_ARGS MAC "zz:zz": not an Ethernet MAC address`},
	}
}

// adminBridge is a bridge an administrator made: an uplink port (whose MAC
// the bridge keeps while pods come and go), an address in net1's subnet, no
// DAD (so its link-local address does not change state during the test).
func adminBridge(t *testing.T, b *bed) {
	nettest.Sysctl(t, b.node, "net.ipv6.conf.default.accept_dad", "0")
	nettest.MustRun(t, b.node, "ip", "link", "add", "cni1", "type", "bridge")
	nettest.MustRun(t, b.node, "ip", "link", "add", "uplink0", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "uplink0p")
	nettest.MustRun(t, b.node, "ip", "link", "set", "uplink0", "master", "cni1", "up")
	nettest.MustRun(t, b.node, "ip", "link", "set", "uplink0p", "up")
	nettest.MustRun(t, b.node, "ip", "addr", "add", "10.240.10.254/24", "dev", "cni1")
	nettest.MustRun(t, b.node, "ip", "link", "set", "cni1", "up")
	waitForLinkLocal(t, b, "cni1")
}

// TestHostileInputCatalogue runs every bad input through the plugin binary,
// as a runtime would, and requires the spec's error on stdout (nothing
// else), exit status 1, and node and pod exactly as before.
func TestHostileInputCatalogue(t *testing.T) {
	nettest.Heavy(t)
	cases := hostileCatalogue()
	require.GreaterOrEqual(t, len(cases), 40)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newBed(t)
			b.id = "c-hostile"
			stdin := b.conf(applyFields(validHostileBase(), c.conf)).Bytes
			if c.stdin != nil {
				stdin = c.stdin(b)
			}
			policyFile := nettest.PolicyFile()
			switch c.policy {
			case "":
			case "absent":
				policyFile = filepath.Join(t.TempDir(), "no-policy.json")
			default:
				policyFile = filepath.Join(t.TempDir(), "policy.json")
				require.NoError(t, os.WriteFile(policyFile, []byte(c.policy), 0o644))
			}
			env := hostileEnv(b, "ADD")
			env[policy.PathEnv] = policyFile
			if c.env != nil {
				for k, v := range c.env(b) {
					env[k] = v
				}
			}
			if c.setup != nil {
				c.setup(t, b)
			}
			before := snapshot(b)
			exit, stdout, stderr := runPluginBinary(t, b.node, env, stdin)
			assert.Equal(t, 1, exit, "exit status; stderr: %s", stderr)
			var e types.Error
			dec := json.NewDecoder(bytes.NewReader(stdout))
			require.NoError(t, dec.Decode(&e), "stdout holds the CNI error: %q", stdout)
			assert.False(t, dec.More(), "nothing but the error on stdout: %q", stdout)
			assert.Equal(t, c.code, e.Code, "code of %q", e.Msg)
			want := strings.NewReplacer("{pod}", b.pod.Path(), "{node}", b.node.Path(), "{data}", b.dirs.Data, "{policy}", policyFile).Replace(c.msg)
			assert.True(t, strings.HasPrefix(e.Msg, want), "message\n got: %s\nwant: %s", e.Msg, want)
			assert.Equal(t, before, snapshot(b), "node and pod unchanged")
		})
	}
}

// TestHostileCatalogueBaseIsValid: the catalogue's entries each differ from
// a configuration and environment that work.
func TestHostileCatalogueBaseIsValid(t *testing.T) {
	b := newBed(t)
	env := hostileEnv(b, "ADD")
	exit, stdout, stderr := runPluginBinary(t, b.node, env, b.conf(validHostileBase()).Bytes)
	require.Equal(t, 0, exit, "stdout %s stderr %s", stdout, stderr)
	assert.Contains(t, string(stdout), `"address": "10.240.10.2/24"`)
	env["CNI_COMMAND"] = "DEL"
	exit, stdout, _ = runPluginBinary(t, b.node, env, b.conf(validHostileBase()).Bytes)
	require.Equal(t, 0, exit, "DEL: %s", stdout)
}

// applyFields sets fields over base; a nil value deletes the field.
func applyFields(base, fields map[string]any) map[string]any {
	for k, v := range fields {
		if v == nil {
			delete(base, k)
			continue
		}
		base[k] = v
	}
	return base
}

// runPluginBinary execs the plugin in the node namespace with exactly env
// (plus PATH) and stdin, as a container runtime does.
func runPluginBinary(t *testing.T, node ns.NetNS, env map[string]string, stdin []byte) (exit int, stdout, stderr []byte) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(filepath.Join(nettest.CNIPath(t), "multi-bridge"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errOut
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		if v != "" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	err := node.Do(func(ns.NetNS) error { return cmd.Run() })
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		return exitErr.ExitCode(), out.Bytes(), errOut.Bytes()
	case err != nil:
		t.Fatalf("running the plugin: %v", err)
	}
	return 0, out.Bytes(), errOut.Bytes()
}

// waitForLinkLocal waits for the kernel to give link its IPv6 link-local
// address, which it does asynchronously once the link has carrier, and for
// every address of the node to settle.
func waitForLinkLocal(t *testing.T, b *bed, link string) {
	t.Helper()
	require.Eventually(t, func() bool {
		settled := !strings.Contains(strings.Join(b.onNode("ip", "-6", "addr", "show"), "\n"), "tentative")
		return settled && len(b.onNode("ip", "-6", "addr", "show", "dev", link, "scope", "link")) > 0
	}, 5*time.Second, 20*time.Millisecond, "link-local address of %s", link)
}

// Teardown runs with a lenient loader, but never executes a plugin type
// that is a path, never writes outside the allowed directories, and never
// treats the node's own namespace as a pod's.
func TestHostileTeardown(t *testing.T) {
	nettest.Heavy(t)
	t.Run("DEL with an ipam type that is a path", func(t *testing.T) {
		b := newBed(t)
		before := snapshot(b)
		env := hostileEnv(b, "DEL")
		marker := filepath.Join(b.dirs.Data, "executed")
		script := filepath.Join(b.dirs.Data, "evil")
		require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755))
		conf := b.conf(applyFields(validHostileBase(), map[string]any{"ipam": map[string]any{"type": script, "subnet": "10.240.10.0/24"}})).Bytes
		exit, stdout, _ := runPluginBinary(t, b.node, env, conf)
		assert.Equal(t, 1, exit)
		assert.Contains(t, string(stdout), `invalid \"ipam.type\" \"`+script+`\": a plugin type is the plain file name`)
		assert.NoFileExists(t, marker, "the path was not executed")
		assert.Equal(t, before, snapshot(b))
	})
	t.Run("DEL naming the node namespace keeps the node rules", func(t *testing.T) {
		b := newBed(t)
		nettest.MustRun(t, b.node, "ip", "rule", "add", "from", "198.51.100.7", "lookup", "7", "pref", "107")
		before := snapshot(b)
		env := hostileEnv(b, "DEL")
		env["CNI_NETNS"] = b.node.Path()
		conf := map[string]any{}
		require.NoError(t, json.Unmarshal(b.conf(validHostileBase()).Bytes, &conf))
		conf["prevResult"] = map[string]any{"cniVersion": "1.1.0", "ips": []map[string]any{{"address": "198.51.100.7/24"}}}
		conf["logLevel"] = "verbose"
		data, err := json.Marshal(conf)
		require.NoError(t, err)
		exit, stdout, stderr := runPluginBinary(t, b.node, env, data)
		// skel answers such a DEL with its error 8 after the plugin ran;
		// the plugin treated the namespace as no pod's.
		assert.Equal(t, 1, exit)
		assert.JSONEq(t, `{"code": 8, "msg": "plugin's netns and netns from CNI_NETNS should not be the same"}`, string(stdout))
		assert.Contains(t, string(stderr), `CNI_NETNS is the node's own namespace; cleaning up the node side only`)
		assert.Equal(t, before, snapshot(b), "the node's rule from 198.51.100.7 stays")
	})
	t.Run("DEL with a forged prevResult keeps the rules of another attachment", func(t *testing.T) {
		b := newBed(t)
		b.mustAdd(b.conf(net1(nil)), "net1")
		before := snapshot(b)
		env := hostileEnv(b, "DEL")
		env["CNI_CONTAINERID"], env["CNI_IFNAME"] = "never-added", "net9"
		conf := map[string]any{}
		require.NoError(t, json.Unmarshal(b.conf(net1(map[string]any{"name": "net8", "bridge": "cni8"})).Bytes, &conf))
		conf["prevResult"] = map[string]any{"cniVersion": "1.1.0", "ips": []map[string]any{{"address": "10.240.10.2/24"}}}
		data, err := json.Marshal(conf)
		require.NoError(t, err)
		exit, stdout, _ := runPluginBinary(t, b.node, env, data)
		assert.Equal(t, 0, exit, "%s", stdout)
		assert.Equal(t, []string{"101: from 10.240.10.2 lookup 1"}, b.podRules("-4"))
		assert.Equal(t, before, snapshot(b))
	})
	t.Run("a refused logFile is never created", func(t *testing.T) {
		b := newBed(t)
		target := filepath.Join(t.TempDir(), "outside")
		require.NoError(t, os.Mkdir(target, 0o755))
		allowed := filepath.Join(b.dirs.Data, "logs")
		require.NoError(t, os.Symlink(target, allowed))
		env := hostileEnv(b, "ADD")
		env[policy.PathEnv] = filepath.Join(t.TempDir(), "policy.json")
		require.NoError(t, os.WriteFile(env[policy.PathEnv], []byte(`{"allowedDirectories": ["`+b.dirs.Data+`", "`+b.dirs.Runtime+`", "`+b.dirs.IPAM+`"]}`), 0o644))
		for _, c := range []struct {
			name string
			env  map[string]string
		}{{"through a link", nil}, {"with the ADD refused for another reason", map[string]string{"CNI_IFNAME": "lo"}}} {
			e := maps.Clone(env)
			maps.Copy(e, c.env)
			logFile := filepath.Join(allowed, "plugin.log")
			if c.env != nil {
				logFile = filepath.Join(b.dirs.Data, "plugin.log")
			}
			exit, stdout, _ := runPluginBinary(t, b.node, e, b.conf(applyFields(validHostileBase(), map[string]any{"logFile": logFile})).Bytes)
			assert.Equal(t, 1, exit, c.name)
			assert.NotEmpty(t, stdout, c.name)
			assert.NoFileExists(t, logFile, c.name)
		}
		entries, err := os.ReadDir(target)
		require.NoError(t, err)
		assert.Empty(t, entries)
	})
	t.Run("GC with a logFile outside the allowed directories", func(t *testing.T) {
		b := newBed(t)
		env := hostileEnv(b, "GC")
		env[policy.PathEnv] = filepath.Join(t.TempDir(), "absent.json")
		logFile := "/etc/multi-bridge-hostile-test.log"
		conf := b.conf(applyFields(validHostileBase(), map[string]any{"logFile": logFile})).Bytes
		exit, stdout, _ := runPluginBinary(t, b.node, env, conf)
		assert.Equal(t, 1, exit)
		assert.Contains(t, string(stdout), `\"logFile\" \"/etc/multi-bridge-hostile-test.log\" is not allowed by rule \"allowedDirectories\" of the default node policy`)
		assert.NoFileExists(t, logFile)
	})
	t.Run("STATUS with a broken policy file", func(t *testing.T) {
		b := newBed(t)
		env := hostileEnv(b, "STATUS")
		env[policy.PathEnv] = filepath.Join(t.TempDir(), "policy.json")
		require.NoError(t, os.WriteFile(env[policy.PathEnv], []byte(`{"allowIPMasq": "no"}`), 0o644))
		exit, stdout, _ := runPluginBinary(t, b.node, env, b.conf(validHostileBase()).Bytes)
		assert.Equal(t, 1, exit)
		var e types.Error
		require.NoError(t, json.Unmarshal(stdout, &e))
		assert.Equal(t, uint(types.ErrPluginNotAvailable), e.Code)
		assert.Contains(t, e.Msg, "no usable node policy: node policy "+env[policy.PathEnv]+" is unusable: json: cannot unmarshal string")
	})
	t.Run("STATUS of a network the policy refuses", func(t *testing.T) {
		b := newBed(t)
		env := hostileEnv(b, "STATUS")
		env[policy.PathEnv] = filepath.Join(t.TempDir(), "policy.json")
		require.NoError(t, os.WriteFile(env[policy.PathEnv], []byte(withTestDirs(`"allowIPMasq": false`)), 0o644))
		exit, stdout, _ := runPluginBinary(t, b.node, env, b.conf(validHostileBase()).Bytes)
		assert.Equal(t, 1, exit)
		var e types.Error
		require.NoError(t, json.Unmarshal(stdout, &e))
		assert.Equal(t, uint(types.ErrPluginNotAvailable), e.Code)
		assert.Contains(t, e.Msg, `the node policy refuses this network: "ipMasq" true is not allowed by rule "allowIPMasq"`)
	})
}

// hostileEnv is a runtime's environment for command on the bed.
func hostileEnv(b *bed, command string) map[string]string {
	return map[string]string{
		"CNI_COMMAND": command, "CNI_CONTAINERID": b.id, "CNI_NETNS": b.pod.Path(), "CNI_IFNAME": "net1",
		"CNI_PATH": nettest.CNIPath(b.t), "CNI_ARGS": multusArgs, policy.PathEnv: nettest.PolicyFile(),
	}
}

// A gateway subnet the node also routes through its uplink is the
// administrator's call: listed in allowedSubnets, it is served.
func TestRoutedSubnetAllowedByThePolicy(t *testing.T) {
	b := newBed(t)
	nettest.MustRun(t, b.node, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplinkp")
	nettest.MustRun(t, b.node, "ip", "addr", "add", "198.51.100.1/24", "dev", "uplink")
	nettest.MustRun(t, b.node, "ip", "link", "set", "uplink", "up")
	nettest.MustRun(t, b.node, "ip", "route", "add", "10.240.0.0/16", "via", "198.51.100.254")
	env := hostileEnv(b, "ADD")
	conf := b.conf(net1(nil)).Bytes
	exit, stdout, _ := runPluginBinary(t, b.node, env, conf)
	require.Equal(t, 1, exit)
	assert.Contains(t, string(stdout), `subnet 10.240.10.0/24 of bridge \"cni1\" overlaps the node's route to 10.240.0.0/16 via 198.51.100.254 dev uplink`)

	env[policy.PathEnv] = filepath.Join(t.TempDir(), "policy.json")
	require.NoError(t, os.WriteFile(env[policy.PathEnv], []byte(withTestDirs(`"allowedSubnets": ["10.240.0.0/16"]`)), 0o644))
	exit, stdout, stderr := runPluginBinary(t, b.node, env, conf)
	require.Equal(t, 0, exit, "%s %s", stdout, stderr)
	assert.Contains(t, b.onNode("ip", "route", "show", "10.240.10.0/24"), "10.240.10.0/24 dev cni1 proto kernel scope link src 10.240.10.1")
}
