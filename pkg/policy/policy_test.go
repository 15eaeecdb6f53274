package policy

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
)

const net1 = `{"cniVersion":"1.1.0","name":"net1","type":"multi-bridge","bridge":"cni1","isGateway":true,"table":1,"priority":101,` +
	`"ipMasq":true,"ipam":{"type":"host-local","subnet":"10.240.10.0/24"}}`

func load(t *testing.T, conf string) *config.Network {
	t.Helper()
	n, err := config.Load([]byte(conf), "")
	require.NoError(t, err)
	return n
}

func TestDefaultPolicyAllowsAValidNetworkWithFilesInTheUsualPlaces(t *testing.T) {
	n := load(t, `{"name":"net1","type":"multi-bridge","logFile":"/var/log/multi-bridge/plugin.log","dataDir":"/var/lib/cni/multi-bridge",`+
		`"runtimeDir":"/run/multi-bridge","ipam":{"type":"host-local","subnet":"10.240.10.0/24","dataDir":"/var/lib/cni/networks"}}`)
	assert.NoError(t, Default().Check(n))
}

func TestDefaultPolicyKeepsFilesInTheirPlaces(t *testing.T) {
	for _, c := range []struct{ conf, msg string }{
		{`{"name":"n","logFile":"/etc/ld.so.preload"}`, `"logFile" "/etc/ld.so.preload" is not allowed by rule "allowedDirectories" of the default node policy, which allows [/var/lib/cni/multi-bridge /var/lib/cni/networks /run/multi-bridge /var/run/multi-bridge /var/log/multi-bridge]`},
		{`{"name":"n","dataDir":"/var/lib/cnix"}`, `"dataDir" "/var/lib/cnix" is not allowed`},
		{`{"name":"n","runtimeDir":"/"}`, `"runtimeDir" "/" is not allowed`},
		{`{"name":"n","ipam":{"type":"host-local","subnet":"10.240.10.0/24","dataDir":"/root"}}`, `"ipam.dataDir" "/root" is not allowed`},
	} {
		err := Default().Check(load(t, c.conf))
		var e *types.Error
		require.ErrorAs(t, err, &e, c.conf)
		assert.Equal(t, uint(types.ErrInvalidNetworkConfig), e.Code)
		assert.Contains(t, e.Msg, c.msg)
		assert.NotEmpty(t, e.Details)
	}
}

func TestEveryRuleRefusesWithItsName(t *testing.T) {
	for _, c := range []struct{ policy, conf, msg string }{
		{`{"allowedBridges":["mb-*","net?"]}`, net1, `"bridge" "cni1" is not allowed by rule "allowedBridges" of test.json, which allows ["mb-*", "net?"]`},
		{`{"allowedSubnets":["10.240.0.0/20"]}`, `{"name":"n","nodeSubnets":{"pool":"10.240.0.0/16","size":24},"ipam":{"type":"host-local"}}`, `"nodeSubnets.pool" 10.240.0.0/16 is not allowed by rule "allowedSubnets"`},
		{`{"allowedSubnets":["10.240.0.0/16"]}`, `{"name":"n","ipam":{"type":"static","addresses":[{"address":"192.0.2.5/24"}]}}`, `"ipam.addresses[0].address" 192.0.2.0/24 is not allowed`},
		{`{"allowedIPAMTypes":["host-local"]}`, `{"name":"n","ipam":{"type":"dhcp"}}`, `"ipam.type" "dhcp" is not allowed by rule "allowedIPAMTypes" of test.json, which allows ["host-local"]`},
		{`{"tables":{"min":10,"max":20}}`, net1, `"table" 1 is not allowed by rule "tables" of test.json, which allows 10-20`},
		{`{"tables":{"min":10,"max":20}}`, `{"name":"n","table":0,"ipam":{"type":"host-local","subnet":"10.240.10.0/24"}}`, `"table" 0 is not allowed`},
		{`{"priorities":{"min":200,"max":300}}`, net1, `"priority" 101 is not allowed by rule "priorities" of test.json, which allows 200-300`},
		{`{"allowIPMasq":false}`, net1, `"ipMasq" true is not allowed by rule "allowIPMasq"`},
		{`{"allowedDirectories":["/srv/cni"]}`, `{"name":"n","dataDir":"/var/lib/cni/x"}`, `"dataDir" "/var/lib/cni/x" is not allowed by rule "allowedDirectories" of test.json, which allows [/srv/cni]`},
	} {
		p, err := Parse([]byte(c.policy), "test.json")
		require.NoError(t, err, c.policy)
		err = p.Check(load(t, c.conf))
		var e *types.Error
		require.ErrorAs(t, err, &e, c.policy)
		assert.Equal(t, uint(types.ErrInvalidNetworkConfig), e.Code)
		assert.Contains(t, e.Msg, c.msg)
	}
}

func TestAPolicyAllowsWhatItNames(t *testing.T) {
	p, err := Parse([]byte(`{"allowedBridges":["cni?"],"allowedSubnets":["10.240.0.0/16"],"allowedIPAMTypes":["host-local"],`+
		`"tables":{"min":1,"max":10},"priorities":{"min":100,"max":199},"allowIPMasq":true}`), "test.json")
	require.NoError(t, err)
	assert.NoError(t, p.Check(load(t, net1)))
	assert.NoError(t, p.CheckAddresses("host-local", []netip.Prefix{netip.MustParsePrefix("10.240.10.2/24")}, []netip.Addr{netip.MustParseAddr("10.240.10.1")}))
	assert.ErrorContains(t, p.CheckAddresses("dhcp", []netip.Prefix{netip.MustParsePrefix("192.0.2.7/24")}, nil),
		`address from IPAM "dhcp" 192.0.2.0/24 is not allowed by rule "allowedSubnets"`)
	assert.ErrorContains(t, p.CheckAddresses("dhcp", []netip.Prefix{netip.MustParsePrefix("10.240.1.7/24")}, []netip.Addr{netip.MustParseAddr("192.0.2.1")}),
		`gateway from IPAM "dhcp" 192.0.2.1/32 is not allowed`)
	assert.ErrorContains(t, p.CheckTable(100), `"table" 100 is not allowed by rule "tables"`)
}

// A subnet larger than every allowed one is refused even though it starts
// inside one.
func TestSubnetMustFitInsideAnAllowedOne(t *testing.T) {
	p, err := Parse([]byte(`{"allowedSubnets":["10.240.10.0/24"]}`), "test.json")
	require.NoError(t, err)
	assert.ErrorContains(t, p.Check(load(t, `{"name":"n","ipam":{"type":"host-local","subnet":"10.240.0.0/16"}}`)), `"ipam.subnet" 10.240.0.0/16 is not allowed`)
}

func TestBrokenPolicyFiles(t *testing.T) {
	for _, c := range []struct{ doc, msg string }{
		{`{"allowedBridge":["x"]}`, `json: unknown field "allowedBridge"`},
		{`{"allowedBridges":["[x"]}`, `allowedBridges: bad pattern "[x"`},
		{`{"allowedSubnets":["10.0.0.0"]}`, `allowedSubnets: "10.0.0.0" is not a subnet`},
		{`{"tables":{"min":5,"max":1}}`, `tables: min 5 is above max 1`},
		{`{"allowedDirectories":["var/lib"]}`, `allowedDirectories: "var/lib" is not a clean absolute path`},
		{`{} {}`, `data after the JSON object`},
		{`[`, `unexpected EOF`},
	} {
		_, err := Parse([]byte(c.doc), "p.json")
		var e *types.Error
		require.ErrorAs(t, err, &e, c.doc)
		assert.Equal(t, uint(types.ErrInternal), e.Code)
		assert.Equal(t, "node policy p.json is unusable: "+c.msg, e.Msg)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p, err := Load(filepath.Join(dir, "absent.json"))
	require.NoError(t, err)
	assert.Equal(t, "the default node policy", p.Source())
	path := filepath.Join(dir, "policy.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"allowIPMasq":false}`), 0o644))
	p, err = Load(path)
	require.NoError(t, err)
	assert.Equal(t, path, p.Source())
	assert.Error(t, p.Check(load(t, net1)))
}

// FuzzCheck: any policy document and configuration give an answer, never a
// panic; a refusal is a CNI error.
func FuzzCheck(f *testing.F) {
	f.Add([]byte(`{"allowedBridges":["mb-*"],"allowedSubnets":["10.240.0.0/16"],"tables":{"min":1,"max":10}}`), []byte(net1))
	f.Add([]byte(`{}`), []byte(`{"name":"n","logFile":"/var/log/x","ipam":{"type":"static","addresses":[{"address":"fd00::5/64"}]}}`))
	f.Add([]byte(`{"allowIPMasq":false,"allowedDirectories":["/srv"]}`), []byte(`{"name":"n","nodeSubnets":{"pool":"10.240.0.0/16","size":24},"ipam":{"type":"host-local"}}`))
	f.Fuzz(func(t *testing.T, policyDoc, conf []byte) {
		p, err := Parse(policyDoc, "fuzz.json")
		if err != nil {
			return
		}
		n, err := config.Load(conf, "")
		if err != nil {
			return
		}
		if err := p.Check(n); err != nil {
			var e *types.Error
			require.ErrorAs(t, err, &e)
		}
	})
}

// An absent rule restricts nothing; an empty list allows nothing.
func TestEmptyListAllowsNothing(t *testing.T) {
	p, err := Parse([]byte(`{"allowedIPAMTypes": [], "allowedBridges": null}`), "test.json")
	require.NoError(t, err)
	assert.ErrorContains(t, p.Check(load(t, net1)), `"ipam.type" "host-local" is not allowed by rule "allowedIPAMTypes" of test.json, which allows []`)
	p, err = Parse([]byte(`{"allowedSubnets": []}`), "test.json")
	require.NoError(t, err)
	assert.ErrorContains(t, p.Check(load(t, net1)), `"ipam.subnet" 10.240.10.0/24 is not allowed by rule "allowedSubnets"`)
}

// A symbolic link inside an allowed directory does not lead out of it.
func TestResolvedPathsStayInside(t *testing.T) {
	base := t.TempDir()
	allowed, outside := filepath.Join(base, "allowed"), filepath.Join(base, "outside")
	require.NoError(t, os.MkdirAll(allowed, 0o755))
	require.NoError(t, os.MkdirAll(outside, 0o755))
	require.NoError(t, os.Symlink(outside, filepath.Join(allowed, "link")))
	p, err := Parse([]byte(`{"allowedDirectories": ["`+allowed+`"]}`), "test.json")
	require.NoError(t, err)
	inside := load(t, `{"name":"n","logFile":"`+allowed+`/logs/new/plugin.log"}`)
	assert.NoError(t, p.CheckPaths(inside))
	assert.NoError(t, p.CheckResolvedPaths(inside), "a path that does not exist yet")
	escaping := load(t, `{"name":"n","logFile":"`+allowed+`/link/plugin.log"}`)
	assert.NoError(t, p.CheckPaths(escaping), "lexically inside")
	assert.ErrorContains(t, p.CheckResolvedPaths(escaping), `"logFile" "`+allowed+`/link/plugin.log" (leading to "`+outside+`/plugin.log") is not allowed by rule "allowedDirectories"`)
	require.NoError(t, os.Symlink(filepath.Join(outside, "not-yet.log"), filepath.Join(allowed, "dangling.log")))
	dangling := load(t, `{"name":"n","logFile":"`+allowed+`/dangling.log"}`)
	assert.ErrorContains(t, p.CheckResolvedPaths(dangling), `(leading to "`+outside+`/not-yet.log") is not allowed`)
}
