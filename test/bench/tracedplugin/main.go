// Command tracedplugin is multi-bridge's plugin main with timing around it,
// for finding where an ADD's time goes (BENCHMARKS.md): the same plugin
// (pkg/plugin, production options) plus, when MB_TRACE_DIR is set,
//
//   - one JSON line per call appended to $MB_TRACE_DIR/steps.jsonl: the
//     verb, the time from main() to each ADD step's end (through the
//     plugin's AfterStep seam) and the total;
//   - a CPU profile per call in $MB_TRACE_DIR/cpu-<pid>.pprof when
//     MB_TRACE_CPU=1 (merge them: go tool pprof -top bin/cni/multi-bridge cpu-*.pprof).
//
// Use it in place of bin/cni/multi-bridge:
// go build -o bin/cni/multi-bridge ./test/bench/tracedplugin
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/multi-bridge-cni/multi-bridge/pkg/plugin"
	"github.com/multi-bridge-cni/multi-bridge/pkg/policy"
)

type step struct {
	Name string  `json:"step"`
	MS   float64 `json:"ms"` // since main() started, at the end of the step
}

func main() {
	start := time.Now()
	dir := os.Getenv("MB_TRACE_DIR")
	if dir == "" {
		skel.PluginMainFuncs(plugin.New(plugin.Options{PolicyFile: os.Getenv(policy.PathEnv)}).Funcs(), version.All, "multi-bridge CNI plugin (traced)")
		return
	}
	var mu sync.Mutex
	var steps []step
	since := func() float64 { return float64(time.Since(start).Microseconds()) / 1000 }
	opts := plugin.Options{PolicyFile: os.Getenv(policy.PathEnv), AfterStep: func(name string) error {
		mu.Lock()
		steps = append(steps, step{name, since()})
		mu.Unlock()
		return nil
	}}
	if os.Getenv("MB_TRACE_CPU") == "1" {
		if f, err := os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%d.pprof", os.Getpid()))); err == nil {
			_ = pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
		}
	}
	defer func() {
		line, _ := json.Marshal(map[string]any{"verb": os.Getenv("CNI_COMMAND"), "steps": steps, "total_ms": since()})
		if f, err := os.OpenFile(filepath.Join(dir, "steps.jsonl"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			_, _ = f.Write(append(line, '\n'))
			_ = f.Close()
		}
	}()
	skel.PluginMainFuncs(plugin.New(opts).Funcs(), version.All, "multi-bridge CNI plugin (traced)")
}
