package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// ProcessExec runs a delegated (IPAM) plugin like invoke.RawExec, but lets
// it inherit a file: the attachment's lock. Runtimes SIGKILL a plugin that
// overruns its deadline; its IPAM child lives on, and without the inherited
// lock the runtime's DEL could release the attachment before the orphan
// reserves an address for it, leaking the address. (Killing the child with
// the plugin is no cure: host-local writes a reservation non-atomically, and
// a reservation file killed half-written matches no attachment.)
// invoke.RawExec offers no way to pass files or to see the finished
// process, hence this small copy; the benchmark uses AfterRun to read each
// plugin process's resource usage.
type ProcessExec struct {
	invoke.RawExec
	version.PluginDecoder
	// Hold, when set, is inherited by the plugin process.
	Hold *os.File
	// AfterRun, when set, sees every plugin process that ran, failed or not.
	AfterRun func(ctx context.Context, pluginPath string, state *os.ProcessState)
}

// ExecPlugin runs the plugin and returns its stdout, or the CNI error it
// printed.
func (e *ProcessExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if e.Hold != nil {
		cmd.ExtraFiles = []*os.File{e.Hold}
	}
	err := cmd.Run()
	if e.AfterRun != nil && cmd.ProcessState != nil {
		e.AfterRun(ctx, pluginPath, cmd.ProcessState)
	}
	if err != nil {
		return nil, pluginError(err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// pluginError turns a failed run into the CNI error the plugin printed, as
// invoke.RawExec does.
func pluginError(err error, stdout, stderr []byte) error {
	e := &types.Error{}
	switch {
	case len(stdout) == 0 && len(stderr) == 0:
		e.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	case len(stdout) == 0:
		e.Msg = fmt.Sprintf("netplugin failed: %q", string(stderr))
	default:
		if perr := json.Unmarshal(stdout, e); perr != nil {
			e.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", string(stdout), perr)
		}
	}
	return e
}
