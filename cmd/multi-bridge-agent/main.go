// Command multi-bridge-agent is multi-bridge's node agent, run on every node
// (a DaemonSet): it leases the node a slice of each network's pool through
// the Kubernetes API, writes it where the plugin reads it, and keeps routes
// to the other nodes' slices. See pkg/agent.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent"
	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
)

// Version is set at build time (-ldflags "-X main.Version=...").
var Version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "multi-bridge-agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("multi-bridge-agent", flag.ContinueOnError)
	var (
		nodeName   = fs.String("node-name", os.Getenv("NODE_NAME"), "name of this node's Node object (default $NODE_NAME)")
		kubeconfig = fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default $KUBECONFIG; in-cluster config when empty)")
		runtimeDir = fs.String("runtime-dir", config.DefaultRuntimeDir, "the plugin's runtimeDir: the node's slices are written to <dir>/subnets")
		netnsPath  = fs.String("netns", "", "manage routes in this network namespace (path, e.g. /run/netns/x) instead of the agent's own")
		confDir    = fs.String("cni-conf-dir", "", "also read networks from the CNI configuration files here (e.g. /etc/cni/net.d)")
		resync     = fs.Duration("resync", 30*time.Second, "period of full reconciles")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		version    = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version {
		fmt.Println("multi-bridge-agent", Version)
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Options{
		NodeName: *nodeName, Config: cfg, RuntimeDir: *runtimeDir, CNIConfDir: *confDir,
		NetNS: *netnsPath, Resync: *resync, Log: log,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("starting", "version", Version)
	return a.Run(ctx)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no --kubeconfig and not in a pod (%w): pass --kubeconfig", err)
	}
	return cfg, nil
}
