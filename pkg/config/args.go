package config

import "strings"

// Args is CNI_ARGS as Multus and container runtimes send it:
// "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;...;FOO=bar".
//
// types.LoadArgs is not used because it fails on unknown keys unless
// IgnoreUnknown is present and on pairs without '=', and a runtime's merge can
// produce both; a delegate must never fail an ADD over CNI_ARGS it does not
// need. Keys may repeat (Multus prepends its own and keeps the runtime's): the
// last one wins, as it does in types.LoadArgs.
type Args struct {
	parts []string // as received, for ForIPAM
	pairs [][2]string
}

// ParseArgs never fails: malformed pairs are ignored.
func ParseArgs(s string) Args {
	var a Args
	for _, part := range strings.Split(s, ";") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		a.parts = append(a.parts, part)
		a.pairs = append(a.pairs, [2]string{k, v})
	}
	return a
}

// Get returns the last value of key, or "".
func (a Args) Get(key string) string {
	v := ""
	for _, p := range a.pairs {
		if p[0] == key {
			v = p[1]
		}
	}
	return v
}

// ForIPAM renders the arguments for the IPAM plugin: without IP= (the
// requested addresses travel in runtimeConfig.ips, which every CNI IPAM
// plugin that supports static addresses reads as a list), without pairs that
// are not exactly key=value (types.LoadArgs, which IPAM plugins use, fails on
// them), and led by IgnoreUnknown=1, so that keys the IPAM plugin does not
// know (pod identity, MAC=, a runtime's own) never fail the ADD.
func (a Args) ForIPAM() string {
	kept := []string{"IgnoreUnknown=1"}
	for i, part := range a.parts {
		key := a.pairs[i][0]
		if key == "IP" || key == "IgnoreUnknown" || strings.Count(part, "=") != 1 {
			continue
		}
		kept = append(kept, part)
	}
	if len(kept) == 1 {
		return ""
	}
	return strings.Join(kept, ";")
}
