package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/types"
)

// Limits on the configuration text. A NetworkAttachmentDefinition is
// written by namespace users and multi-bridge runs as root on every node,
// so the text is treated as hostile: bounded, well-formed, unambiguous.
const (
	// MaxConfigSize is far above any real configuration (a few KiB) and
	// below what could hurt a node when many pods start at once.
	MaxConfigSize = 1 << 20
	// MaxJSONDepth: multi-bridge's own configuration nests four levels
	// (ipam.ranges[][]{}); Multus and libcni add a couple more.
	MaxJSONDepth = 32
)

// checkText refuses configuration text that encoding/json would accept but
// read in a way its author or another reader might not: oversized, invalid
// UTF-8 (silently replaced by U+FFFD), keys given twice or differing only in
// case (encoding/json keeps the last and matches case-insensitively, while
// Multus and the IPAM plugin may read the other one), and deep nesting.
func checkText(stdin []byte) error {
	if len(stdin) > MaxConfigSize {
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("network configuration is %d bytes, over the limit of %d (1 MiB)", len(stdin), MaxConfigSize),
			"shorten the NetworkAttachmentDefinition's spec.config")
	}
	if !utf8.Valid(stdin) {
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("network configuration is not valid UTF-8 (first bad byte at offset %d)", firstInvalidUTF8(stdin)),
			"write the configuration as UTF-8 JSON")
	}
	return checkStructure(stdin)
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return -1
}

// jsonScope is one open object or array while walking the token stream.
type jsonScope struct {
	path    string
	object  bool
	wantKey bool   // in an object: the next token is a key
	key     string // in an object: the key whose value comes next
	keys    map[string]string
}

// checkStructure walks the JSON tokens once, refusing duplicate keys and
// nesting deeper than MaxJSONDepth. Syntax errors are left to the decoder
// that follows, which words them better.
func checkStructure(stdin []byte) error {
	dec := json.NewDecoder(bytes.NewReader(stdin))
	dec.UseNumber()
	var stack []*jsonScope
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil
		}
		var top *jsonScope
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if key, ok := tok.(string); ok {
				folded := foldKey(key)
				if prev, dup := top.keys[folded]; dup {
					return duplicateKey(top.path, prev, key)
				}
				top.keys[folded] = key
				top.key, top.wantKey = key, false
				continue
			}
		}
		delim, isDelim := tok.(json.Delim)
		switch {
		case isDelim && (delim == '}' || delim == ']'):
			stack = stack[:len(stack)-1]
			continue
		case isDelim:
			if len(stack) >= MaxJSONDepth {
				return types.NewError(types.ErrDecodingFailure,
					fmt.Sprintf("network configuration nests deeper than %d levels (at %s)", MaxJSONDepth, displayPath(top.path)),
					"flatten the configuration; multi-bridge's own fields nest four levels deep")
			}
			path := ""
			if top != nil {
				path = top.path + "[]"
				if top.object {
					path = top.path + "." + top.key
				}
			}
			stack = append(stack, &jsonScope{path: path, object: delim == '{', wantKey: delim == '{', keys: map[string]string{}})
		}
		if top != nil && top.object {
			top.wantKey = true
		}
	}
}

func duplicateKey(path, first, second string) error {
	field := strings.TrimPrefix(path+"."+second, ".")
	why := fmt.Sprintf("key %q appears twice", field)
	if first != second {
		why = fmt.Sprintf("keys %q and %q differ only in case, and JSON readers disagree on which one counts", strings.TrimPrefix(path+"."+first, "."), field)
	}
	return types.NewError(types.ErrDecodingFailure, "ambiguous network configuration: "+why,
		"keep one of them in the NetworkAttachmentDefinition's spec.config")
}

func displayPath(p string) string {
	if p == "" {
		return "the top level"
	}
	return strings.TrimPrefix(p, ".")
}

// pluginTypeName reports whether name may be a "type": the file name of a
// plugin in CNI_PATH (a letter or digit, then letters, digits, '.', '_',
// '-'; at most 128 characters). libcni and the CNI spec look the name up in
// CNI_PATH, and a name with a '/' would reach any binary on the node. (A
// loop, not a regexp: compiling one took a third of a millisecond of every
// plugin start.)
func pluginTypeName(name string) bool {
	if name == "" || len(name) > 128 {
		return false
	}
	for i, r := range name {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '.' && r != '_' && r != '-') {
			return false
		}
	}
	return true
}

// validateTypes refuses a plugin type that is not a plain file name. It is
// fatal even for DEL and GC: the IPAM type is executed as root.
func validateTypes(n *Network) error {
	for _, t := range []struct{ field, value string }{
		{`"type"`, n.Conf.Type},
		{`"ipam.type"`, n.Conf.IPAM.Type},
	} {
		if t.value == "" || pluginTypeName(t.value) {
			continue
		}
		return invalid(t.field, fmt.Sprintf("%q", t.value), "a plugin type is the plain file name of a binary in CNI_PATH (letters, digits, '.', '_', '-'; no '/' and no leading '.')",
			`use the plugin's name, e.g. "host-local"; the node's CNI_PATH decides where it is`)
	}
	return nil
}

// PathFields are the configuration fields that name files or directories on
// the node, as field name and value: the node policy decides where they may
// point.
func (n *Network) PathFields() []PathField {
	var ipam struct {
		DataDir string `json:"dataDir"`
	}
	_ = json.Unmarshal(n.RawConf["ipam"], &ipam)
	var out []PathField
	for _, f := range []PathField{
		{`"logFile"`, n.Conf.LogFile},
		{`"dataDir"`, n.Conf.DataDir},
		{`"runtimeDir"`, n.Conf.RuntimeDir},
		{`"ipam.dataDir"`, ipam.DataDir},
	} {
		if f.Value != "" {
			out = append(out, f)
		}
	}
	return out
}

// PathField is one file or directory a configuration names.
type PathField struct {
	Field, Value string
}

// validatePaths requires the paths a configuration names to be absolute and
// free of ".." (the node policy then says under which directories). It is
// fatal even for DEL and GC, which also write there (logs, locks, state).
func validatePaths(n *Network) error {
	for _, f := range n.PathFields() {
		if !filepath.IsAbs(f.Value) {
			return invalid(f.Field, fmt.Sprintf("%q", f.Value), "not an absolute path", "give an absolute path, e.g. /var/log/multi-bridge.log, or omit it")
		}
		for _, part := range strings.Split(f.Value, "/") {
			if part == ".." {
				return invalid(f.Field, fmt.Sprintf("%q", f.Value), `contains ".."`, `give the path without ".." components`)
			}
		}
		if strings.ContainsRune(f.Value, 0) {
			return invalid(f.Field, fmt.Sprintf("%q", f.Value), "contains a NUL byte", "remove it")
		}
	}
	return nil
}

// foldKey maps a key to a form equal for every key encoding/json matches to
// the same field: each rune becomes the smallest of its case-folding orbit,
// so "ipMasq", "IPMASQ" and "ipMaſq" (U+017F, which folds to "s") agree.
func foldKey(s string) string {
	var b strings.Builder
	for _, r := range s {
		smallest := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			smallest = min(smallest, f)
		}
		b.WriteRune(smallest)
	}
	return b.String()
}

// canonicalKeys maps the folded form of every key multi-bridge reads to its
// one spelling: the json names of NetConf's fields (PluginConf's included).
var canonicalKeys = sync.OnceValue(func() map[string]string { return jsonNames(reflect.TypeFor[NetConf]()) })

// ipamKeys and friends are the keys of the IPAM sections multi-bridge reads
// itself (host-local's and static's layouts).
var (
	ipamKeys = foldedSet("type", "subnet", "rangeStart", "rangeEnd", "gateway", "ranges", "routes", "dataDir",
		"addresses", "resolvConf", "dns")
	rangeKeys   = foldedSet("subnet", "rangeStart", "rangeEnd", "gateway")
	requestKeys = foldedSet("ips", "mac") // of runtimeConfig and args.cni
	addressKeys = foldedSet("address", "gateway")
)

func foldedSet(names ...string) map[string]string {
	m := map[string]string{}
	for _, n := range names {
		m[foldKey(n)] = n
	}
	return m
}

func jsonNames(t reflect.Type) map[string]string {
	m := map[string]string{}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			for k, v := range jsonNames(f.Type) {
				m[k] = v
			}
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			m[foldKey(name)] = name
		}
	}
	return m
}

// checkSpelling refuses a key spelt otherwise than multi-bridge's field it
// stands for ("IPAM" for "ipam"): encoding/json, host-local and Multus
// match keys without regard to case, but a lookup by name does not, and a
// check that looked up "ipam" must not be skipped by "IPAM".
func checkSpelling(raw map[string]json.RawMessage) error {
	if err := spelledAs(canonicalKeys(), raw, ""); err != nil {
		return err
	}
	for _, section := range []string{"runtimeConfig", "args"} {
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw[section], &obj) != nil {
			continue
		}
		if section == "args" {
			if err := spelledAs(foldedSet("cni"), obj, "args."); err != nil {
				return err
			}
			if json.Unmarshal(obj["cni"], &obj) != nil {
				continue
			}
			section = "args.cni"
		}
		if err := spelledAs(requestKeys, obj, section+"."); err != nil {
			return err
		}
	}
	var ipam map[string]json.RawMessage
	if json.Unmarshal(raw["ipam"], &ipam) != nil {
		return nil // not an object: the decoder says so
	}
	if err := spelledAs(ipamKeys, ipam, "ipam."); err != nil {
		return err
	}
	var nested struct {
		Ranges    [][]map[string]json.RawMessage `json:"ranges"`
		Addresses []map[string]json.RawMessage   `json:"addresses"`
	}
	_ = json.Unmarshal(raw["ipam"], &nested)
	for i, set := range nested.Ranges {
		for j, r := range set {
			if err := spelledAs(rangeKeys, r, fmt.Sprintf("ipam.ranges[%d][%d].", i, j)); err != nil {
				return err
			}
		}
	}
	for i, a := range nested.Addresses {
		if err := spelledAs(addressKeys, a, fmt.Sprintf("ipam.addresses[%d].", i)); err != nil {
			return err
		}
	}
	return nil
}

func spelledAs(canonical map[string]string, obj map[string]json.RawMessage, prefix string) error {
	for key := range obj {
		if want, ok := canonical[foldKey(key)]; ok && key != want {
			return types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("ambiguous network configuration: key %q stands for %q", prefix+key, prefix+want),
				fmt.Sprintf("spell it %q", want))
		}
	}
	return nil
}
