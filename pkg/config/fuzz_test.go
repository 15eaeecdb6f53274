package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// hostileTexts are configuration texts of the hostile-input catalogue
// (test/integration/hostile_test.go) that the loader alone must refuse:
// they seed the fuzzer along with the examples and TestRefusedValues.
var hostileTexts = []struct {
	name, text string
	code       uint
	msg        string
}{
	{"duplicated key", `{` + base + `,"table":1,"table":7}`, types.ErrDecodingFailure, `ambiguous network configuration: key "table" appears twice`},
	{"keys differing only in case", `{` + base + `,"table":1,"Table":7}`, types.ErrDecodingFailure, `ambiguous network configuration: keys "table" and "Table" differ only in case`},
	{"duplicated key inside ipam", `{"name":"n","type":"multi-bridge","ipam":{"type":"host-local","subnet":"10.240.10.0/24","subnet":"0.0.0.0/0"}}`, types.ErrDecodingFailure, `ambiguous network configuration: key "ipam.subnet" appears twice`},
	{"duplicated key in a list's object", `{"name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"10.240.10.0/24","gateway":"10.240.10.1","gateway":"10.240.10.2"}]]}}`, types.ErrDecodingFailure, `ambiguous network configuration: key "ipam.ranges[][].gateway" appears twice`},
	{"keys folding alike beyond ASCII", `{` + base + `,"ipMasq":false,"ipMaſq":true}`, types.ErrDecodingFailure, `ambiguous network configuration: keys "ipMasq" and "ipMaſq" differ only in case`},
	{"ipam spelt otherwise", `{"name":"n","type":"multi-bridge","IPAM":{"type":"host-local","subnet":"10.240.1.0/24","dataDir":"/etc"}}`, types.ErrDecodingFailure, `ambiguous network configuration: key "IPAM" stands for "ipam"`},
	{"a field spelt with a long s", `{` + base + `,"ipMaſq":true}`, types.ErrDecodingFailure, `ambiguous network configuration: key "ipMaſq" stands for "ipMasq"`},
	{"ipam key spelt otherwise", `{"name":"n","nodeSubnets":{"pool":"10.240.0.0/16","size":24},"ipam":{"type":"host-local","Subnet":"0.0.0.0/0"}}`, types.ErrDecodingFailure, `ambiguous network configuration: key "ipam.Subnet" stands for "ipam.subnet"`},
	{"range key spelt otherwise", `{"name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"10.240.1.0/24","Gateway":"192.0.2.1"}]]}}`, types.ErrDecodingFailure, `ambiguous network configuration: key "ipam.ranges[0][0].Gateway" stands for "ipam.ranges[0][0].gateway"`},
	{"requested IPs spelt otherwise", `{` + base + `,"args":{"cni":{"IPs":["10.240.10.9/24"]}}}`, types.ErrDecodingFailure, `ambiguous network configuration: key "args.cni.IPs" stands for "args.cni.ips"`},
	{"runtimeConfig key spelt otherwise", `{` + base + `,"runtimeConfig":{"MAC":"0a:58:0a:f0:0a:02"}}`, types.ErrDecodingFailure, `ambiguous network configuration: key "runtimeConfig.MAC" stands for "runtimeConfig.mac"`},
	{"deeply nested", `{` + base + `,"deep":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, types.ErrDecodingFailure, `network configuration nests deeper than 32 levels (at deep[][][]`},
	{"deep objects", `{` + base + `,"a":` + strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat("}", 41), types.ErrDecodingFailure, `network configuration nests deeper than 32 levels (at a.a.a.a`},
	{"not UTF-8", "{" + base + ",\"note\":\"caf\xe9\"}", types.ErrDecodingFailure, `network configuration is not valid UTF-8 (first bad byte at offset 124)`},
	{"over 1 MiB", `{` + base + `,"pad":"` + strings.Repeat("x", MaxConfigSize) + `"}`, types.ErrDecodingFailure, `network configuration is 1048698 bytes, over the limit of 1048576 (1 MiB)`},
	{"ipam type absolute", `{"name":"n","ipam":{"type":"/bin/sh"}}`, types.ErrInvalidNetworkConfig, `invalid "ipam.type" "/bin/sh": a plugin type is the plain file name`},
	{"ipam type relative path", `{"name":"n","ipam":{"type":"../sh"}}`, types.ErrInvalidNetworkConfig, `invalid "ipam.type" "../sh"`},
	{"ipam type hidden", `{"name":"n","ipam":{"type":".x"}}`, types.ErrInvalidNetworkConfig, `invalid "ipam.type" ".x"`},
	{"type with a slash", `{"name":"n","type":"a/b"}`, types.ErrInvalidNetworkConfig, `invalid "type" "a/b"`},
	{"logFile relative", `{` + base + `,"logFile":"x.log"}`, types.ErrInvalidNetworkConfig, `invalid "logFile" "x.log": not an absolute path`},
	{"dataDir climbing", `{` + base + `,"dataDir":"/var/lib/cni/../../etc"}`, types.ErrInvalidNetworkConfig, `invalid "dataDir" "/var/lib/cni/../../etc": contains ".."`},
	{"vlan out of range", `{` + base + `,"vlan":4095}`, types.ErrInvalidNetworkConfig, `invalid "vlan" 4095: out of range 0-4094`},
	{"vlan negative", `{` + base + `,"vlan":-1}`, types.ErrInvalidNetworkConfig, `invalid "vlan" -1: out of range 0-4094`},
	{"subnet invalid", `{"name":"n","ipam":{"type":"host-local","subnet":"10.240.10.0/33"}}`, types.ErrInvalidNetworkConfig, `invalid "ipam.subnet" "10.240.10.0/33": not a subnet`},
	{"subnet wrong type", `{"name":"n","ipam":{"type":"host-local","subnet":24}}`, types.ErrDecodingFailure, `invalid "ipam.subnet": got a JSON number, want a string`},
	{"gateway outside", `{"name":"n","ipam":{"type":"host-local","subnet":"10.240.10.0/24","gateway":"10.240.11.1"}}`, types.ErrInvalidNetworkConfig, `invalid "ipam.gateway" "10.240.11.1": outside the subnet 10.240.10.0/24`},
	{"range start outside", `{"name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"fd00::/64","rangeStart":"fd01::5"}]]}}`, types.ErrInvalidNetworkConfig, `invalid "ipam.ranges[0][0].rangeStart" "fd01::5": outside the subnet fd00::/64`},
	{"range backwards", `{"name":"n","ipam":{"type":"host-local","subnet":"10.240.10.0/24","rangeStart":"10.240.10.9","rangeEnd":"10.240.10.8"}}`, types.ErrInvalidNetworkConfig, `invalid "ipam.rangeEnd" "10.240.10.8": comes before rangeStart 10.240.10.9`},
	{"bound without subnet", `{"name":"n","ipam":{"type":"host-local","gateway":"10.240.10.1"}}`, types.ErrInvalidNetworkConfig, `invalid "ipam.gateway" "10.240.10.1": given without a subnet`},
	{"static address without length", `{"name":"n","ipam":{"type":"static","addresses":[{"address":"10.240.10.5"}]}}`, types.ErrInvalidNetworkConfig, `invalid "ipam.addresses[0].address" "10.240.10.5": not an address with its prefix length`},
}

func TestHostileTexts(t *testing.T) {
	for _, c := range hostileTexts {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load([]byte(c.text), "")
			e := cniError(t, err)
			if e.Code != c.code || !strings.HasPrefix(e.Msg, c.msg) {
				t.Fatalf("got %d %q, want %d %q", e.Code, e.Msg, c.code, c.msg)
			}
			// DEL and GC refuse them too: each is either unreadable or
			// names something executed or written as root...
			_, problems, err := LoadLenient([]byte(c.text), "")
			if err == nil && len(problems) == 0 {
				t.Fatalf("a lenient load accepted it")
			}
		})
	}
}

// The paths and plugin types a teardown would use are refused even by the
// lenient loader, which otherwise goes on past invalid fields.
func TestLenientLoadStillRefusesWhatRunsAsRoot(t *testing.T) {
	for _, text := range []string{
		`{"name":"n","ipam":{"type":"../../bin/sh"}}`,
		`{"name":"n","logFile":"log"}`,
		`{"name":"n","runtimeDir":"/run/../etc"}`,
	} {
		_, _, err := LoadLenient([]byte(text), "")
		if err == nil {
			t.Errorf("LoadLenient accepted %s", text)
		}
	}
}

// FuzzLoad: the loader never panics, and whatever it accepts is within the
// documented ranges. Run it with `make fuzz`; a crasher it finds lands in
// testdata/fuzz/FuzzLoad and, committed, runs with every `go test`.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{`+base+`,"table":1,"priority":101}`), "IP=10.240.10.5/24")
	f.Add([]byte(`{`+base+`,"table":254}`), "")
	f.Add([]byte(`{"name":"x","ipam":{"type":"static"},"runtimeConfig":{"ips":["fd00::1/64"],"mac":"0a:00:00:00:00:01"}}`), "MAC=zz")
	f.Add([]byte(`{"name":"x","nodeSubnets":{"pool":"10.0.0.0/8","size":24},"ipam":{"type":"host-local"}}`), ";;;")
	examples, _ := filepath.Glob("../../examples/cni/*.conf")
	if len(examples) == 0 {
		f.Fatal("no examples found in examples/cni")
	}
	for _, path := range examples {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "K8S_POD_NAMESPACE=demo;K8S_POD_NAME=netshoot1;IgnoreUnknown=1")
	}
	for _, c := range hostileTexts {
		if len(c.text) < 4096 { // the fuzzer's seeds should stay small
			f.Add([]byte(c.text), "")
		}
	}
	for _, c := range refusedValues {
		f.Add(withFields(f, c.extra), "")
	}
	f.Fuzz(func(t *testing.T, stdin []byte, args string) {
		n, err := Load(stdin, args)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("non-CNI error %T: %v", err, err)
			}
			if e.Msg == "" {
				t.Fatalf("error without a message: %+v", e)
			}
			_, _, _ = LoadLenient(stdin, args)
			return
		}
		r := n.Routing
		if r.Mode == RoutingTable && (r.Table <= 0 || r.Table == 253 || r.Table == 254 || r.Table == 255) {
			t.Fatalf("accepted table %d", r.Table)
		}
		if r.Priority < 0 || r.Priority > MaxPriority || (n.Conf.Priority != nil && r.Priority == 0) {
			t.Fatalf("accepted priority %d", r.Priority)
		}
		if len(stdin) > MaxConfigSize {
			t.Fatalf("accepted %d bytes", len(stdin))
		}
		if n.Conf.IPAM.Type != "" && !pluginTypeName(n.Conf.IPAM.Type) {
			t.Fatalf("accepted ipam.type %q", n.Conf.IPAM.Type)
		}
		for _, f := range n.PathFields() {
			if !filepath.IsAbs(f.Value) || slices.Contains(strings.Split(f.Value, "/"), "..") {
				t.Fatalf("accepted %s %q", f.Field, f.Value)
			}
		}
		for _, d := range n.DeclaredSubnets() {
			if !d.Prefix.IsValid() || d.Prefix != d.Prefix.Masked() && d.Field != "static IP request" {
				t.Fatalf("declared %s %v", d.Field, d.Prefix)
			}
		}
		if _, err := n.IPAMConf(nil); err != nil {
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("IPAMConf: non-CNI error %v", err)
			}
		}
	})
}
