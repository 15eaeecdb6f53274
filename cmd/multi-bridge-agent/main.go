// Command multi-bridge-agent is multi-bridge's node agent, run on every node
// (a DaemonSet): it leases the node a slice of each network's pool through
// the Kubernetes API, writes it where the plugin reads it, and keeps routes
// to the other nodes' slices (pkg/agent). Its "install" subcommand puts the
// plugin into the node's CNI bin directory (pkg/install).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent"
	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/health"
	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
	"github.com/multi-bridge-cni/multi-bridge/pkg/install"
	"github.com/multi-bridge-cni/multi-bridge/pkg/policy"
)

// Version is set at build time (-ldflags "-X main.Version=..."); the plugin
// in the same image is built with the same version.
var Version = "dev"

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "install" {
		err = runInstall(os.Args[2:])
	} else {
		err = run(os.Args[1:])
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "multi-bridge-agent:", err)
		os.Exit(1)
	}
}

// cniConfigFlags are shared by both modes: a network configuration to put
// into the host's CNI conf dir (the cluster-default network).
type cniConfigFlags struct {
	confDir, config *string
}

func (f cniConfigFlags) target() string {
	return filepath.Join(*f.confDir, filepath.Base(*f.config))
}

// read returns the configuration to write, checked; nil when none is asked.
func (f cniConfigFlags) read() ([]byte, error) {
	if *f.config == "" {
		return nil, nil
	}
	if *f.confDir == "" {
		return nil, errors.New("--cni-config needs --cni-conf-dir")
	}
	data, err := os.ReadFile(*f.config)
	if err != nil {
		return nil, err
	}
	if err := install.ValidateConfig(data); err != nil {
		return nil, fmt.Errorf("--cni-config %s: %w", *f.config, err)
	}
	return data, nil
}

func runInstall(args []string) error {
	fs := flag.NewFlagSet("multi-bridge-agent install", flag.ContinueOnError)
	var (
		plugin  = fs.String("plugin", "/opt/multi-bridge/bin/multi-bridge", "the plugin binary to install")
		binDir  = fs.String("cni-bin-dir", "/opt/cni/bin", "the node's CNI bin directory")
		force   = fs.Bool("force", false, "replace an installed plugin even if it is newer")
		confDir = fs.String("cni-conf-dir", "", "the node's CNI conf dir (with --cni-config)")
		conf    = fs.String("cni-config", "", "a network configuration to write into --cni-conf-dir (atomically)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cf := cniConfigFlags{confDir: confDir, config: conf}
	data, err := cf.read() // checked before anything is installed
	if err != nil {
		return err
	}
	version, err := install.VersionOf(*plugin)
	if err != nil {
		return fmt.Errorf("--plugin %s: cannot read its version: %w", *plugin, err)
	}
	out, err := install.Binary{Source: *plugin, Version: version, Dir: *binDir, Name: "multi-bridge", Force: *force}.Install()
	if err != nil {
		return err
	}
	fmt.Printf("multi-bridge %s: %s in %s\n", version, out, *binDir)
	if data != nil {
		if err := install.Config(cf.target(), data); err != nil {
			return err
		}
		fmt.Printf("network configuration written to %s\n", cf.target())
	}
	return nil
}

func run(args []string) error {
	fs := flag.NewFlagSet("multi-bridge-agent", flag.ContinueOnError)
	var (
		nodeName     = fs.String("node-name", os.Getenv("NODE_NAME"), "name of this node's Node object (default $NODE_NAME)")
		kubeconfig   = fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default $KUBECONFIG; in-cluster config when empty)")
		runtimeDir   = fs.String("runtime-dir", config.DefaultRuntimeDir, "the plugin's runtimeDir: the node's slices are written to <dir>/subnets")
		netnsPath    = fs.String("netns", "", "manage routes in this network namespace (path, e.g. /run/netns/x) instead of the agent's own")
		confDir      = fs.String("cni-conf-dir", "", "also read networks from the CNI configuration files here (e.g. /etc/cni/net.d)")
		conf         = fs.String("cni-config", "", "a network configuration to write into --cni-conf-dir (atomically) once this node's slices are leased")
		removeOnExit = fs.Bool("remove-cni-config-on-exit", false, "remove the --cni-config file again when the agent stops")
		healthAddr   = fs.String("health-addr", ":9809", "address of /healthz, /readyz and /metrics (empty: none)")
		resync       = fs.Duration("resync", 30*time.Second, "period of full reconciles")
		apiTimeout   = fs.Duration("api-timeout", 10*time.Second, "bound of one reconcile's API calls (routes are repaired from the caches meanwhile)")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
		policyFile   = fs.String("policy", policy.DefaultPath, "the node policy; its allowedSubnets also bound NAD pools (a missing file allows any)")
		version      = fs.Bool("version", false, "print the version and exit")
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
	cf := cniConfigFlags{confDir: confDir, config: conf}
	data, err := cf.read()
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Options{
		NodeName: *nodeName, Config: cfg, RuntimeDir: *runtimeDir, CNIConfDir: *confDir, CNIConfig: data,
		NetNS: *netnsPath, Resync: *resync, APITimeout: *apiTimeout, Log: log, PolicyFile: *policyFile,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if data != nil {
		// Only once the node holds its slices: a runtime that finds the
		// configuration sends pods, and until then ADD would fail (error 11).
		go func() {
			select {
			case <-a.Ready():
				if err := install.Config(cf.target(), data); err != nil {
					log.Error("writing the network configuration", "path", cf.target(), "error", err)
					return
				}
				log.Info("network configuration written", "path", cf.target())
			case <-ctx.Done():
			}
		}()
		if *removeOnExit {
			defer func() {
				if err := install.RemoveConfig(cf.target()); err != nil {
					log.Error("removing the network configuration", "path", cf.target(), "error", err)
				}
			}()
		}
	}
	if *healthAddr != "" {
		ln, err := net.Listen("tcp", *healthAddr)
		if err != nil {
			return fmt.Errorf("--health-addr: %w", err)
		}
		srv := &http.Server{Handler: health.Handler(a.Stats, *resync, nil), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
	}
	log.Info("starting", "version", Version, "health", *healthAddr)
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
