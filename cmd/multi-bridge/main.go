// Command multi-bridge is the CNI plugin: one bridge per network, one veth per
// pod attachment, and a routing table plus source rule per attachment so a
// multi-homed pod answers out of the interface traffic came in on.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/multi-bridge-cni/multi-bridge/pkg/plugin"
)

// Version is set at build time (-ldflags "-X main.Version=...").
var Version = "dev"

func main() {
	skel.PluginMainFuncs(plugin.New(plugin.Options{}).Funcs(), version.All, "multi-bridge CNI plugin "+Version)
}
