package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Build compiles ./cmd/<name> of the repository into dir and returns the
// binary's path.
func Build(dir, name string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %v\n%s", name, err, b)
	}
	return out, nil
}

// AgentOptions are the command-line options of one agent process.
type AgentOptions struct {
	Binary     string
	Node       string
	Kubeconfig string
	RuntimeDir string
	NetNS      string // path, e.g. /run/netns/x
	CNIConfDir string
	Resync     time.Duration
	// LogFile receives the agent's output (appended, so a restarted agent
	// adds to the same file).
	LogFile string
	// HealthAddr is where the agent serves /healthz, /readyz and /metrics;
	// default a free port on 127.0.0.1 (several agents share this host).
	HealthAddr string
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
}

// Agent is a running multi-bridge-agent process.
type Agent struct {
	Opts   AgentOptions
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	killed bool
}

// StartAgent starts an agent process.
func StartAgent(o AgentOptions) (*Agent, error) {
	// The machine's own node policy (if any) must not change the tests:
	// by default the agent reads a policy file that does not exist
	// (ExtraArgs may name another; the last --policy counts).
	args := []string{"--node-name", o.Node, "--kubeconfig", o.Kubeconfig, "--runtime-dir", o.RuntimeDir, "--log-level", "debug",
		"--policy", filepath.Join(o.RuntimeDir, "no-node-policy.json")}
	if o.NetNS != "" {
		args = append(args, "--netns", o.NetNS)
	}
	if o.CNIConfDir != "" {
		args = append(args, "--cni-conf-dir", o.CNIConfDir)
	}
	if o.Resync > 0 {
		args = append(args, "--resync", o.Resync.String())
	}
	if o.HealthAddr == "" {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		o.HealthAddr = addr
	}
	args = append(args, "--health-addr", o.HealthAddr)
	args = append(args, o.ExtraArgs...)
	log, err := os.OpenFile(o.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.Binary, args...)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, and killed when the test process dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startFromLongLivedThread(cmd); err != nil {
		log.Close()
		return nil, err
	}
	a := &Agent{Opts: o, cmd: cmd, done: make(chan struct{})}
	go func() {
		a.err = cmd.Wait()
		log.Close()
		close(a.done)
	}()
	return a, nil
}

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Get fetches a path of the agent's health server.
func (a *Agent) Get(path string) (int, string, error) {
	resp, err := http.Get("http://" + a.Opts.HealthAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// Pid is the process id.
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// Exited reports whether the process ended, and how.
func (a *Agent) Exited() (bool, error) {
	select {
	case <-a.done:
		return true, a.err
	default:
		return false, nil
	}
}

// Stop ends the agent with SIGTERM (SIGKILL after 10 s) and waits for it.
// It reports an agent that exited by itself with an error.
func (a *Agent) Stop() error {
	if done, err := a.Exited(); done {
		if a.killed {
			return nil
		}
		return err
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
		return errors.New("agent ignored SIGTERM for 10s")
	}
	var exit *exec.ExitError
	if errors.As(a.err, &exit) {
		return fmt.Errorf("agent exited: %w", a.err)
	}
	return nil
}

// Kill ends the agent with SIGKILL, as a crash would.
func (a *Agent) Kill() {
	if done, _ := a.Exited(); done {
		return
	}
	a.killed = true
	_ = a.cmd.Process.Kill()
	<-a.done
}

// Log returns what the agent wrote so far.
func (a *Agent) Log() string {
	b, _ := os.ReadFile(a.Opts.LogFile)
	return string(b)
}

// MaxRSSKiB is the process's peak resident set size (VmHWM).
func (a *Agent) MaxRSSKiB() (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.Pid()))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// Output is the combined output of a command, for error messages.
func Output(name string, args ...string) (string, error) {
	var b bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// Pdeathsig fires when the thread that forked the child exits, not the
// process; Go ends threads (testutils.NewNS ends the one it unshared on
// purpose), so agents are forked from one thread that lives as long as the
// test process.
var (
	spawnOnce sync.Once
	spawnReq  chan spawn
)

type spawn struct {
	cmd  *exec.Cmd
	done chan error
}

func startFromLongLivedThread(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReq = make(chan spawn)
		go func() {
			runtime.LockOSThread() // never unlocked: this thread is the agents' parent
			for r := range spawnReq {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error)
	spawnReq <- spawn{cmd, done}
	return <-done
}
