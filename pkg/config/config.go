// Package config turns what a runtime hands multi-bridge (the network
// configuration on stdin, CNI_ARGS and runtimeConfig) into a validated Network.
//
// It never touches the system: every refusal is a *types.Error that names the
// field, the value and what to do, and the whole loader can be tested without
// root and fuzzed.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
)

// Defaults for fields a configuration may omit.
const (
	DefaultBridge     = "cni0"
	DefaultDataDir    = "/var/lib/cni/multi-bridge"
	DefaultRuntimeDir = "/run/multi-bridge"

	// FirstAutoTable and FirstAutoPriority are where automatic choices start,
	// leaving low numbers to operators who pick them by hand (as the seed did
	// with tables 1 and 2).
	FirstAutoTable    = 100
	FirstAutoPriority = 100

	// MaxTable is the largest table id the kernel accepts in a rule.
	MaxTable = math.MaxInt32
	// MaxPriority is the last preference before the kernel's own
	// "from all lookup main" (32766) and "from all lookup default" (32767).
	MaxPriority = 32765
)

// Kernel routing tables a configuration may not claim.
const (
	tableDefault = 253
	tableMain    = 254
	tableLocal   = 255
)

// NetConf is the network configuration as it arrives on stdin: the
// spec.config of a NetworkAttachmentDefinition, after Multus and libcni have
// added their own keys. Keys it does not name are ignored.
type NetConf struct {
	types.PluginConf

	Bridge           string `json:"bridge,omitempty"`
	IsGateway        bool   `json:"isGateway,omitempty"`
	IsDefaultGateway bool   `json:"isDefaultGateway,omitempty"`
	ForceAddress     bool   `json:"forceAddress,omitempty"`
	IPMasq           bool   `json:"ipMasq,omitempty"`
	IPMasqBackend    string `json:"ipMasqBackend,omitempty"`
	MTU              int    `json:"mtu,omitempty"`
	HairpinMode      bool   `json:"hairpinMode,omitempty"`
	PromiscMode      bool   `json:"promiscMode,omitempty"`
	Vlan             int    `json:"vlan,omitempty"`
	MacSpoofChk      bool   `json:"macspoofchk,omitempty"`
	EnableDad        bool   `json:"enabledad,omitempty"`

	// Table and Priority are pointers because "absent" (choose automatically)
	// and 0 (no policy routing / refused) mean different things.
	Table               *int64 `json:"table,omitempty"`
	Priority            *int64 `json:"priority,omitempty"`
	IsManagementNetwork bool   `json:"isManagementNetwork,omitempty"`

	// NodeSubnets gives a cluster-wide pool from which the node agent leases
	// this node a slice; the plugin then hands that slice to the IPAM plugin.
	NodeSubnets *NodeSubnets `json:"nodeSubnets,omitempty"`

	LogFile    string `json:"logFile,omitempty"`
	LogLevel   string `json:"logLevel,omitempty"`
	DataDir    string `json:"dataDir,omitempty"`
	RuntimeDir string `json:"runtimeDir,omitempty"`

	RuntimeConfig struct {
		IPs []string `json:"ips,omitempty"`
		Mac string   `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	Args struct {
		Cni struct {
			IPs []string `json:"ips,omitempty"`
			Mac string   `json:"mac,omitempty"`
		} `json:"cni,omitempty"`
	} `json:"args,omitempty"`
}

// NodeSubnets is the per-node slicing of a network's address pool: the node
// agent leases each node a slice of Pool of prefix length Size, or, with
// FromNodePodCIDR, uses the Node's spec.podCIDRs (Pool is then the cluster's
// pod range, still needed to keep pod-to-pod traffic unmasqueraded).
type NodeSubnets struct {
	Pool            string `json:"pool"`
	Size            int    `json:"size,omitempty"`
	FromNodePodCIDR bool   `json:"fromNodePodCIDR,omitempty"`
}

// RoutingMode says how an attachment's routes are kept in the pod.
type RoutingMode int

const (
	// RoutingAuto: a table of its own, number chosen in the pod at ADD time.
	RoutingAuto RoutingMode = iota
	// RoutingTable: a table of its own, number given by the configuration.
	RoutingTable
	// RoutingMain: no policy routing; routes stay in the main table, no rule.
	RoutingMain
)

// Routing is the validated policy-routing request of an attachment.
type Routing struct {
	Mode  RoutingMode
	Table int // meaningful for RoutingTable
	// Priority is the rule preference; 0 means "choose automatically".
	Priority int
}

// Pod identifies the pod an attachment belongs to, from CNI_ARGS.
type Pod struct {
	Namespace        string
	Name             string
	UID              string
	InfraContainerID string
}

func (p Pod) String() string {
	if p.Name == "" {
		return "-"
	}
	return p.Namespace + "/" + p.Name
}

// Network is a validated configuration plus the per-call requests that came
// with it (static IPs, MAC, pod identity).
type Network struct {
	Conf NetConf

	Bridge   string
	Routing  Routing
	Layer3   bool
	Pool     *netip.Prefix // from nodeSubnets, nil when absent
	MAC      net.HardwareAddr
	IPs      []string // requested static addresses, as given (host-local and static accept CIDR form)
	Pod      Pod
	MasqMode string // "", "nftables" or "iptables"

	// RawConf is the configuration as received, key order and unknown keys
	// included, so the IPAM plugin sees what the runtime sent.
	RawConf map[string]json.RawMessage
	// IPAMArgs is CNI_ARGS for the IPAM plugin: the runtime's string without
	// the IP= key, whose addresses travel in runtimeConfig.ips instead.
	IPAMArgs string
}

// DataDir is where per-attachment state lives.
func (n *Network) DataDir() string {
	if n.Conf.DataDir != "" {
		return n.Conf.DataDir
	}
	return DefaultDataDir
}

// RuntimeDir is where lock files live.
func (n *Network) RuntimeDir() string {
	if n.Conf.RuntimeDir != "" {
		return n.Conf.RuntimeDir
	}
	return DefaultRuntimeDir
}

// Load parses and validates a network configuration and the CNI_ARGS string
// of one call.
func Load(stdin []byte, cniArgs string) (*Network, error) {
	n, problems, err := load(stdin, cniArgs, false)
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		return nil, problems[0]
	}
	return n, nil
}

// LoadLenient is Load for tearing an attachment down (DEL, GC): a
// configuration or CNI_ARGS that ADD would refuse now (a NAD edited since, a
// typo in a pod's annotation) must not keep an attachment's addresses
// reserved forever. The problems come back with a Network whose offending
// fields keep their defaults; only a configuration that is not a JSON object
// is fatal.
func LoadLenient(stdin []byte, cniArgs string) (*Network, []error, error) {
	return load(stdin, cniArgs, true)
}

func load(stdin []byte, cniArgs string, lenient bool) (*Network, []error, error) {
	if err := checkText(stdin); err != nil {
		return nil, nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return nil, nil, types.NewError(types.ErrDecodingFailure,
			"network configuration is not a JSON object: "+err.Error(),
			"pass the NetworkAttachmentDefinition's spec.config (a JSON object) on stdin")
	}
	if err := checkSpelling(raw); err != nil {
		return nil, nil, err
	}
	var problems []error
	var conf NetConf
	if err := json.Unmarshal(stdin, &conf); err != nil {
		// encoding/json skips a field of the wrong type and decodes the
		// rest, so a lenient load goes on with that field's default.
		var typeErr *json.UnmarshalTypeError
		if !lenient || !errors.As(err, &typeErr) {
			return nil, nil, decodeError(err)
		}
		problems = append(problems, decodeError(err))
	}
	args := ParseArgs(cniArgs)
	n := &Network{Conf: conf, RawConf: raw, IPAMArgs: args.ForIPAM()}
	n.Pod = Pod{
		Namespace:        args.Get("K8S_POD_NAMESPACE"),
		Name:             args.Get("K8S_POD_NAME"),
		UID:              args.Get("K8S_POD_UID"),
		InfraContainerID: args.Get("K8S_POD_INFRA_CONTAINER_ID"),
	}
	// What is executed or written as root is checked even for a lenient
	// load: a plugin type that is a path, a file outside the node's places.
	for _, check := range []func(*Network) error{validateTypes, validatePaths} {
		if err := check(n); err != nil {
			return nil, nil, err
		}
	}
	for _, check := range []func(*Network, Args) error{
		validateName, validateBridge, validateLayer3, validateRouting, validateLink,
		validateMasq, validateUnsupported, validateMAC, validateIPs,
		validateNodeSubnets, validateIPAMSubnets, validateLogLevel,
	} {
		if err := check(n, args); err != nil {
			problems = append(problems, err)
			if !lenient {
				break
			}
		}
	}
	return n, problems, nil
}

// ResultVersion is the spec version of the result: the configuration's. A
// configuration without cniVersion (a NAD may omit it, and libcni passes a
// single configuration on as it is) gets the newest, whose result carries the
// interfaces Multus needs for the network-status; a version-less 0.1.0
// result has none.
func (n *Network) ResultVersion() string {
	if n.Conf.CNIVersion == "" {
		return LatestVersion
	}
	return n.Conf.CNIVersion
}

// LatestVersion is the newest CNI spec version multi-bridge implements.
const LatestVersion = "1.1.0"

// invalid builds the error every refusal uses: the field, the value, why, and
// what to do instead.
func invalid(field string, value any, why, fix string) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("invalid %s %v: %s", field, value, why), fix)
}

// decodeError names the field whose JSON type was wrong, which the
// encoding/json message only does in Go terms.
func decodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("invalid %s: got a JSON %s, want %s", quoteField(typeErr.Field), typeErr.Value, jsonKind(typeErr.Type.Kind().String())),
			"fix the type of that field in the network configuration")
	}
	return types.NewError(types.ErrDecodingFailure, "cannot decode network configuration: "+err.Error(), "")
}

func quoteField(f string) string {
	// Fields of the embedded types.PluginConf come as "PluginConf.dns".
	f = strings.TrimPrefix(f, "PluginConf.")
	if f == "" {
		return "field"
	}
	return fmt.Sprintf("%q", f)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "bool":
		return "a boolean"
	case "int", "int64", "int32", "uint", "uint32", "uint64":
		return "an integer"
	case "string":
		return "a string"
	case "slice":
		return "a list"
	default:
		return "an object"
	}
}

// validateName applies CNI's own rule for network names (skel applies it
// before the plugin runs, but the node agent loads configurations itself).
// The name becomes part of file names on the node (the node's slice file,
// lock files), so it must never be a path: the rule admits no '/' and no
// name that starts with '.'.
func validateName(n *Network, _ Args) error {
	name := n.Conf.Name
	if name == "" {
		return invalid(`"name"`, `""`, "a network needs a name",
			`add "name": the network's name, made of letters, digits, '_', '.' and '-', starting with a letter or digit`)
	}
	if err := utils.ValidateNetworkName(name); err != nil {
		return invalid(`"name"`, fmt.Sprintf("%q", name), "CNI allows only letters, digits, '_', '.' and '-' in a network name, starting with a letter or digit",
			"rename the network (e.g. \"net1\")")
	}
	return nil
}

func validateBridge(n *Network, _ Args) error {
	n.Bridge = n.Conf.Bridge
	if n.Bridge == "" {
		n.Bridge = DefaultBridge
	}
	if err := utils.ValidateInterfaceName(n.Bridge); err != nil {
		return invalid(`"bridge"`, fmt.Sprintf("%q", n.Bridge), err.Msg,
			"use a Linux interface name of 1-15 characters without '/', ':' or spaces")
	}
	if n.Bridge == "all" || n.Bridge == "default" {
		return invalid(`"bridge"`, fmt.Sprintf("%q", n.Bridge), "the kernel reserves the name for its per-interface settings",
			`name the bridge otherwise (e.g. "cni1")`)
	}
	return nil
}

func validateLayer3(n *Network, _ Args) error {
	n.Layer3 = n.Conf.IPAM.Type != ""
	if n.Conf.IsDefaultGateway {
		// A default route through the bridge needs the bridge to hold the gateway.
		n.Conf.IsGateway = true
	}
	if n.Layer3 {
		return nil
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{`"isGateway"`, n.Conf.IsGateway},
		{`"isDefaultGateway"`, n.Conf.IsDefaultGateway},
		{`"ipMasq"`, n.Conf.IPMasq},
		{`"nodeSubnets"`, n.Conf.NodeSubnets != nil},
	} {
		if f.set {
			return invalid(f.name, true, "needs addresses, but \"ipam\" has no \"type\"",
				`add an "ipam" section (e.g. {"type": "host-local", "subnet": "10.240.10.0/24"}) or drop the field`)
		}
	}
	return nil
}

func validateRouting(n *Network, _ Args) error {
	c := n.Conf
	switch {
	case c.IsManagementNetwork && c.Table != nil && *c.Table != 0:
		return invalid(`"table"`, *c.Table, `contradicts "isManagementNetwork": true, which means table 0 (routes in main, no rule)`,
			`drop "table" or "isManagementNetwork"`)
	case c.IsManagementNetwork:
		n.Routing.Mode = RoutingMain
	case c.Table == nil:
		n.Routing.Mode = RoutingAuto
	case *c.Table == 0:
		n.Routing.Mode = RoutingMain
	default:
		t := *c.Table
		switch {
		case t < 0 || t > MaxTable:
			return invalid(`"table"`, t, fmt.Sprintf("out of range 0-%d", MaxTable),
				"use 1-252 or 256-2147483647, 0 for no policy routing, or omit it to choose automatically")
		case t == tableDefault || t == tableMain || t == tableLocal:
			return invalid(`"table"`, t, fmt.Sprintf("%d is the kernel's %q table", t, reservedTableName(t)),
				"use 1-252 or 256-2147483647, 0 for no policy routing, or omit it to choose automatically")
		}
		n.Routing.Mode = RoutingTable
		n.Routing.Table = int(t)
	}
	if c.Priority != nil {
		p := *c.Priority
		if p < 1 || p > MaxPriority {
			why := fmt.Sprintf("out of range 1-%d", MaxPriority)
			switch p {
			case 0:
				why = `preference 0 sorts before "from all lookup local" and would break local delivery in the pod`
			case 32766:
				why = `32766 is the kernel's "from all lookup main" rule`
			case 32767:
				why = `32767 is the kernel's "from all lookup default" rule`
			}
			return invalid(`"priority"`, p, why, "use 1-32765, or omit it to choose the lowest free preference from 100")
		}
		n.Routing.Priority = int(p)
	}
	if n.Routing.Mode != RoutingMain && !n.Layer3 && (c.Table != nil || c.Priority != nil) {
		field, value := `"table"`, any(nil)
		if c.Table != nil {
			value = *c.Table
		} else {
			field, value = `"priority"`, *c.Priority
		}
		return invalid(field, value, `policy routing needs addresses, but "ipam" has no "type"`,
			`add an "ipam" section or drop the field`)
	}
	return nil
}

func reservedTableName(t int64) string {
	switch t {
	case tableDefault:
		return "default"
	case tableMain:
		return "main"
	default:
		return "local"
	}
}

func validateLink(n *Network, _ Args) error {
	c := n.Conf
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return invalid(`"mtu"`, c.MTU, "out of range 68-65535", "omit it to keep the kernel default (1500), or give a valid MTU")
	}
	return nil
}

func validateMasq(n *Network, _ Args) error {
	switch b := n.Conf.IPMasqBackend; b {
	case "", "nftables", "iptables":
		n.MasqMode = b
		return nil
	default:
		return invalid(`"ipMasqBackend"`, fmt.Sprintf("%q", b), "unknown backend",
			`use "nftables" or "iptables", or omit it to use nftables where the node has it`)
	}
}

// validateUnsupported refuses fields of the reference bridge plugin that
// multi-bridge accepts syntactically but does not implement yet, so they are
// never silently ignored.
func validateUnsupported(n *Network, _ Args) error {
	if n.Conf.Vlan < 0 || n.Conf.Vlan > 4094 {
		return invalid(`"vlan"`, n.Conf.Vlan, "out of range 0-4094", "omit it (multi-bridge does not tag pods' traffic)")
	}
	if n.Conf.Vlan != 0 {
		return types.NewError(types.ErrUnsupportedField,
			fmt.Sprintf(`"vlan": %d is not supported yet by multi-bridge`, n.Conf.Vlan),
			"remove it: multi-bridge separates networks by giving each its own bridge")
	}
	// preserveDefaultVlan only matters with "vlan", so any value is fine.
	if v, ok := n.RawConf["vlanTrunk"]; ok && string(v) != "null" && string(v) != "[]" {
		return types.NewError(types.ErrUnsupportedField,
			`"vlanTrunk" is not supported yet by multi-bridge`,
			"remove it: multi-bridge separates networks by giving each its own bridge")
	}
	if n.Conf.MacSpoofChk {
		return types.NewError(types.ErrUnsupportedField,
			`"macspoofchk": true is not supported yet by multi-bridge`,
			`remove it or set it to false`)
	}
	return nil
}

func validateMAC(n *Network, args Args) error {
	// Precedence follows the reference bridge plugin: runtimeConfig (the
	// "mac" capability) over args.cni over CNI_ARGS.
	candidates := []struct{ field, value string }{
		{`"runtimeConfig.mac"`, n.Conf.RuntimeConfig.Mac},
		{`"args.cni.mac"`, n.Conf.Args.Cni.Mac},
		{"CNI_ARGS MAC", args.Get("MAC")},
	}
	for _, c := range candidates {
		if c.value == "" {
			continue
		}
		mac, err := net.ParseMAC(c.value)
		if err != nil || len(mac) != 6 {
			return invalid(c.field, fmt.Sprintf("%q", c.value), "not an Ethernet MAC address", `use the form "0a:58:0a:f0:0a:02"`)
		}
		if mac[0]&1 == 1 {
			return invalid(c.field, fmt.Sprintf("%q", c.value), "is a multicast address", "use a unicast MAC (first octet even), e.g. 0a:58:...")
		}
		n.MAC = mac
		return nil
	}
	return nil
}

func validateIPs(n *Network, args Args) error {
	type source struct {
		field  string
		values []string
	}
	sources := []source{
		{`"runtimeConfig.ips"`, n.Conf.RuntimeConfig.IPs},
		{`"args.cni.ips"`, n.Conf.Args.Cni.IPs},
		// Multus joins a selection's ips with commas in IP=, which host-local
		// cannot parse; splitting here is what makes dual-stack static IPs work.
		{"CNI_ARGS IP", splitNonEmpty(args.Get("IP"), ",")},
	}
	seen := map[netip.Addr]bool{}
	for _, s := range sources {
		for _, v := range s.values {
			addr, err := parseAddr(v)
			if err != nil {
				return invalid(s.field, fmt.Sprintf("%q", v), "not an IP address", `use CIDR form, e.g. "10.240.10.5/24" or "fd00::5/64" (host-local also takes a bare "10.240.10.5", static does not)`)
			}
			if seen[addr] {
				continue
			}
			seen[addr] = true
			n.IPs = append(n.IPs, strings.TrimSpace(v))
		}
	}
	if len(n.IPs) > 0 && !n.Layer3 {
		return invalid(`static IP request`, n.IPs, `needs an IPAM plugin, but "ipam" has no "type"`, `add an "ipam" section (host-local or static)`)
	}
	return nil
}

func parseAddr(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), nil
	}
	return netip.ParseAddr(s)
}

func validateNodeSubnets(n *Network, _ Args) error {
	ns := n.Conf.NodeSubnets
	if ns == nil {
		return nil
	}
	pool, err := netip.ParsePrefix(ns.Pool)
	if err != nil || pool != pool.Masked() {
		return invalid(`"nodeSubnets.pool"`, fmt.Sprintf("%q", ns.Pool), "not a network prefix",
			`use the network address with its length, e.g. "10.240.0.0/16"`)
	}
	switch {
	case ns.FromNodePodCIDR && ns.Size != 0:
		return invalid(`"nodeSubnets.size"`, ns.Size, `is set by the Node's spec.podCIDR when "fromNodePodCIDR" is true`, `drop "size"`)
	case !ns.FromNodePodCIDR && (ns.Size <= pool.Bits() || ns.Size > pool.Addr().BitLen()-2):
		return invalid(`"nodeSubnets.size"`, ns.Size, fmt.Sprintf("must be longer than the pool's /%d and leave room for hosts", pool.Bits()),
			fmt.Sprintf("use a prefix length between %d and %d", pool.Bits()+1, pool.Addr().BitLen()-2))
	}
	// The slice replaces the IPAM subnet; only host-local takes it there,
	// and a subnet of its own would contradict the node's slice.
	if n.Conf.IPAM.Type != "host-local" {
		return invalid(`"ipam.type"`, fmt.Sprintf("%q", n.Conf.IPAM.Type), `"nodeSubnets" hands each node's slice to host-local`,
			`use "ipam": {"type": "host-local"} without "subnet" or "ranges"`)
	}
	var ipam map[string]json.RawMessage
	_ = json.Unmarshal(n.RawConf["ipam"], &ipam)
	for _, key := range []string{"subnet", "ranges"} {
		if _, ok := ipam[key]; ok {
			return invalid(`"ipam.`+key+`"`, string(ipam[key]), `conflicts with "nodeSubnets": the node agent gives each node its own slice`,
				`remove "ipam.`+key+`"`)
		}
	}
	n.Pool = &pool
	return nil
}

func validateLogLevel(n *Network, _ Args) error {
	switch l := strings.ToLower(n.Conf.LogLevel); l {
	case "", "debug", "verbose", "info", "error", "panic":
		return nil
	default:
		return invalid(`"logLevel"`, fmt.Sprintf("%q", n.Conf.LogLevel), "unknown level",
			`use "debug", "verbose", "info", "error" or "panic" (Multus's levels)`)
	}
}

func splitNonEmpty(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
