package integration

// Bursts, soaks and kills: the plugin never leaks a veth, an address, a rule
// or a firewall entry, and never fails because another ADD ran at the same
// time.

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/multi-bridge-cni/multi-bridge/pkg/bridge"
	"github.com/multi-bridge-cni/multi-bridge/pkg/plugin"
	"github.com/multi-bridge-cni/multi-bridge/test/nettest"
)

// leaks counts what attachments leave on the node and in its pods.
type leaks struct {
	HostVeths, Reservations, StateFiles, PodRules, PodLinks int
	MasqueradeRules                                         int
}

func countLeaks(t *testing.T, b *bed, pods []ns.NetNS) leaks {
	t.Helper()
	var l leaks
	l.HostVeths = len(b.hostVeths())
	l.Reservations = len(b.reservations())
	_ = filepath.WalkDir(b.dirs.Data, func(_ string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			l.StateFiles++
		}
		return nil
	})
	for _, p := range pods {
		l.PodLinks += len(linkNames(t, p)) - 1 // lo
		for _, r := range nettest.Lines(nettest.MustRun(t, p, "ip", "rule")) {
			if !strings.HasPrefix(r, "0:") && !strings.HasPrefix(r, "32766:") && !strings.HasPrefix(r, "32767:") {
				l.PodRules++
			}
		}
	}
	l.MasqueradeRules = len(grep(b.onNode("nft", "list", "ruleset"), "masquerade comment"))
	return l
}

// 100 ADDs at once for 100 pods on a bridge that does not exist yet.
func TestHundredParallelAddsOnANewBridge(t *testing.T) {
	nettest.Heavy(t)
	b := newBed(t)
	conf := b.conf(net1(map[string]any{"ipMasq": true, "ipam": nettest.HostLocal("10.240.8.0/22", map[string]any{"routes": nettest.DefaultRoute})}))
	const n = 100
	pods := make([]ns.NetNS, n)
	rts := make([]*libcni.RuntimeConf, n)
	for i := range pods {
		pods[i] = nettest.NewNS(t)
		rts[i] = runtimeConf(fmt.Sprintf("burst-%03d", i), pods[i].Path(), "net1")
	}
	ips := make([]string, n)
	parallel(n, n, func(i int) {
		res, err := b.rt.Add(conf, rts[i])
		if assert.NoError(t, err, "ADD %d", i) {
			ips[i] = res.IPs[0].Address.String()
		}
	})
	require.False(t, t.Failed())

	assert.Equal(t, 1, len(grep(linkNames(t, b.node), "cni1")), "one bridge")
	assert.Equal(t, []string{"inet 10.240.8.1/22"}, fields(grep(b.onNode("ip", "-4", "-o", "addr", "show", "cni1"), "inet"), 2, 4),
		"one gateway address")
	seen := map[string]bool{}
	for _, ip := range ips {
		assert.False(t, seen[ip], "address %s given twice", ip)
		seen[ip] = true
	}
	assert.Len(t, b.hostVeths(), n)
	assert.Len(t, grep(b.onNode("ip", "-o", "link", "show", "master", "cni1"), "veth"), n, "every host veth on the bridge")

	parallel(n, n, func(i int) { assert.NoError(t, b.rt.Del(conf, rts[i]), "DEL %d", i) })
	assert.Equal(t, leaks{MasqueradeRules: 1}, countLeaks(t, b, pods), "only the network's masquerade rule is left")
}

// 1,000 ADD/DEL operations, 16 at a time, on two bridges, on random pods.
func TestSoakAddDel(t *testing.T) {
	nettest.Heavy(t)
	b := newBed(t)
	confs := []*libcni.PluginConfig{
		b.conf(net1(map[string]any{"ipMasq": true, "ipam": nettest.HostLocal("10.240.8.0/22", map[string]any{"routes": nettest.DefaultRoute})})),
		b.conf(map[string]any{"name": "net2", "bridge": "cni2", "isGateway": true, "ipMasq": true, "table": 2, "priority": 102,
			"ipam": nettest.HostLocal("10.240.12.0/22", map[string]any{"routes": nettest.DefaultRoute})}),
	}
	ifNames := []string{"net1", "net2"}
	const pods, ops, workers = 24, 1000, 16
	netns := make([]ns.NetNS, pods)
	for i := range netns {
		netns[i] = nettest.NewNS(t)
	}
	// The runtime never runs two operations on one attachment at once; each
	// attachment has its own lock and attached flag.
	type attachment struct {
		sync.Mutex
		attached bool
	}
	atts := make([][]attachment, pods)
	for i := range atts {
		atts[i] = make([]attachment, len(confs))
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("soak seed %d", seed)
	var failures sync.Map
	parallel(ops, workers, func(op int) {
		r := rand.New(rand.NewPCG(seed, uint64(op)))
		p, nw := r.IntN(pods), r.IntN(len(confs))
		a := &atts[p][nw]
		a.Lock()
		defer a.Unlock()
		rt := runtimeConf(fmt.Sprintf("soak-%02d", p), netns[p].Path(), ifNames[nw])
		var err error
		if a.attached {
			err = b.rt.Del(confs[nw], rt)
		} else {
			_, err = b.rt.Add(confs[nw], rt)
		}
		if err != nil {
			failures.Store(op, err)
			return
		}
		a.attached = !a.attached
	})
	failures.Range(func(op, err any) bool {
		t.Errorf("operation %d failed: %v", op, err)
		return true
	})
	for p := range atts {
		for nw := range confs {
			if atts[p][nw].attached {
				require.NoError(t, b.rt.Del(confs[nw], runtimeConf(fmt.Sprintf("soak-%02d", p), netns[p].Path(), ifNames[nw])))
			}
		}
	}
	assert.Equal(t, leaks{MasqueradeRules: 2}, countLeaks(t, b, netns))
}

// The plugin SIGKILLed at a random moment of ADD, 100 times: the DEL that
// follows (as a runtime sends it, without prevResult) leaves nothing, and so
// does a repeated ADD followed by DEL.
func TestKilledAddThenDelLeavesNothing(t *testing.T) {
	nettest.Heavy(t)
	b := newBed(t)
	conf := b.conf(net1(map[string]any{"ipMasq": true}))
	// Learn how long an ADD takes here, to kill within it.
	start := time.Now()
	b.mustAdd(conf, "net1")
	full := time.Since(start)
	require.NoError(t, b.del(conf, "net1"))
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill seed %d; an ADD takes %v", seed, full)
	r := rand.New(rand.NewPCG(seed, 0))
	plugin := filepath.Join(nettest.CNIPath(t), "multi-bridge")
	killed := 0
	for i := 0; i < 100; i++ {
		id := fmt.Sprintf("killed-%03d", i)
		delay := time.Duration(r.Int64N(int64(full + full/2)))
		var out bytes.Buffer
		var cmd *exec.Cmd
		require.NoError(t, b.node.Do(func(ns.NetNS) error {
			cmd = exec.Command(plugin)
			cmd.Stdin, cmd.Stdout = bytes.NewReader(conf.Bytes), &out
			cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID="+id, "CNI_NETNS="+b.pod.Path(),
				"CNI_IFNAME=net1", "CNI_PATH="+nettest.CNIPath(t), "CNI_ARGS="+multusArgs)
			return cmd.Start()
		}))
		time.Sleep(delay)
		if cmd.Process.Signal(syscall.SIGKILL) == nil {
			if err := cmd.Wait(); err != nil {
				killed++
			}
		}
		rt := runtimeConf(id, b.pod.Path(), "net1")
		if i%2 == 1 {
			// The runtime may also retry the ADD first.
			_, err := b.rt.Add(conf, rt)
			require.NoError(t, err, "ADD again after a kill at %v", delay)
		}
		require.NoError(t, b.rt.DelWithoutPrevResult(conf, rt), "DEL after a kill at %v", delay)
		if l := countLeaks(t, b, []ns.NetNS{b.pod}); l != (leaks{MasqueradeRules: 1}) {
			for _, r := range b.reservations() {
				data, _ := os.ReadFile(filepath.Join(b.dirs.IPAM, r))
				t.Logf("reservation %s: %q", r, data)
			}
			t.Fatalf("iteration %d, killed after %v: %+v", i, delay, l)
		}
	}
	t.Logf("%d of 100 ADDs were killed before they finished", killed)
	assert.Greater(t, killed, 10, "the kills must land inside ADDs")
}

// parallel runs f(0..n-1) with at most width at a time.
func parallel(n, width int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, width)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}

// fields keeps fields [from, to) of each line.
func fields(lines []string, from, to int) []string {
	var out []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) >= to {
			out = append(out, strings.Join(f[from:to], " "))
		}
	}
	return out
}

// The ADD that created a bridge fails right after and rolls back while
// another ADD, which found the bridge but has not attached its veth yet, is
// under way. The other must succeed: the rollback may remove only a bridge no
// ADD is about to use. (The third review found an ADD that took the slow
// path (here: promiscMode, which a ready bridge lacks) attaching without the
// lock, and the creator's rollback deleting the bridge under it.)
func TestCreatorRollbackSparesAConcurrentADD(t *testing.T) {
	nettest.Heavy(t)
	b := newBed(t)
	podB := nettest.NewNS(t)
	run := func(conf []byte, afterStep func(string) error, id string, pod ns.NetNS, out chan<- error) {
		p := plugin.New(plugin.Options{PolicyFile: nettest.PolicyFile(), LogOutput: logWriter{t}, AfterStep: afterStep})
		out <- b.node.Do(func(ns.NetNS) error {
			_, err := p.AddResult(&skel.CmdArgs{ContainerID: id, Netns: pod.Path(), IfName: "net1", Args: multusArgs,
				Path: nettest.CNIPath(t), StdinData: conf})
			return err
		})
	}
	creatorAt, otherAt := make(chan struct{}), make(chan struct{})
	creator, other := make(chan error, 1), make(chan error, 1)
	go run(b.conf(net1(nil)).Bytes, func(step string) error {
		if step != plugin.StepBridge {
			return nil
		}
		close(creatorAt)
		// Fail once the other ADD is past its bridge step, or after a
		// while if it cannot get there before this ADD lets the bridge go.
		select {
		case <-otherAt:
		case <-time.After(time.Second):
		}
		return errors.New("injected failure after the bridge step")
	}, "c-creator", b.pod, creator)
	<-creatorAt
	go run(b.conf(net1(map[string]any{"promiscMode": true})).Bytes, func(step string) error {
		if step == plugin.StepBridge {
			close(otherAt)
			time.Sleep(300 * time.Millisecond) // the window before its veth step
		}
		return nil
	}, "c-other", podB, other)
	assert.ErrorContains(t, <-creator, "injected failure after the bridge step")
	require.NoError(t, <-other, "the other ADD")
	assert.Equal(t, []string{bridge.HostVethName("net1", "c-other", "net1")}, b.hostVeths())
	assert.Len(t, grep(b.onNode("ip", "-o", "link", "show", "master", "cni1"), "veth"), 1)
}
