package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
)

// firewall is the number of firewall rules in a namespace.
type firewall struct {
	iptables int // "-A" lines of iptables-save and ip6tables-save
	nft      int // nftables rules outside the tables iptables-nft manages
}

func (f firewall) total() int { return f.iptables + f.nft }

func (f firewall) String() string {
	return fmt.Sprintf("%d (iptables %d, nftables %d)", f.total(), f.iptables, f.nft)
}

// xtablesTables are the tables iptables-nft keeps in nftables: their rules
// are counted once, through iptables-save.
var xtablesTables = map[string]bool{"filter": true, "nat": true, "mangle": true, "raw": true, "security": true}

// countFirewall counts the rules of the current namespace (call it inside
// inNS for a node).
func countFirewall() (firewall, error) {
	var f firewall
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := output(save)
		if err != nil {
			return f, err
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "-A ") {
				f.iptables++
			}
		}
	}
	ver, _ := output("iptables", "--version")
	iptablesNFT := strings.Contains(ver, "nf_tables")
	out, err := output("nft", "-a", "list", "ruleset")
	if err != nil {
		return f, err
	}
	skip := false
	for _, l := range strings.Split(out, "\n") {
		fields := strings.Fields(l)
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "table":
			// table <family> <name> { # handle N
			skip = iptablesNFT && len(fields) >= 3 && (fields[1] == "ip" || fields[1] == "ip6") && xtablesTables[fields[2]]
			continue
		case "chain", "set", "map", "flowtable", "type", "policy", "comment", "}", "elements", "flags":
			continue
		}
		if !skip && strings.Contains(l, "# handle ") {
			f.nft++
		}
	}
	return f, nil
}

func output(name string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}
