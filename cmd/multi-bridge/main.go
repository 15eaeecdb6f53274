// Command multi-bridge is the CNI plugin: one bridge per network, one veth per
// pod attachment, and a routing table plus source rule per attachment so a
// multi-homed pod answers out of the interface traffic came in on.
package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
	"github.com/multi-bridge-cni/multi-bridge/pkg/plugin"
	"github.com/multi-bridge-cni/multi-bridge/pkg/policy"
)

// Version is set at build time (-ldflags "-X main.Version=...").
var Version = "dev"

func main() {
	if err := boundStdin(config.MaxConfigSize); err != nil {
		_ = err.Print()
		os.Exit(1)
	}
	about := "multi-bridge CNI plugin " + Version
	if os.Getenv("CNI_COMMAND") == "" {
		// skel would print this and exit 0; a runtime that lost
		// CNI_COMMAND must get the spec's error 4 instead.
		fmt.Fprintln(os.Stderr, about)
	}
	opts := plugin.Options{PolicyFile: os.Getenv(policy.PathEnv)}
	skel.PluginMainFuncs(plugin.New(opts).Funcs(), version.All, "")
}
