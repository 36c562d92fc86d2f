//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/agent/cni"
	"github.com/nodemesh/nodemesh/install/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// TestUninstallCleanup is the agent's side of 'nodemesh uninstall': a
// SIGTERM (rolling update) leaves the node as it is; the ConfigMap
// nodemesh-cleanup in the agent's namespace makes the running agent detach
// its programs, remove its pins, conflist and plugin, and answer with a
// NodeCleaned Event whose source host is its node; then it stays up, not
// ready. 'nodemesh-agent cleanup' afterwards finds nothing left to remove.
func TestUninstallCleanup(t *testing.T) {
	cgroupV2 := requireDatapath(t)
	env := kubetest.Get(t)
	ctx := context.Background()
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, cgroupV2, env.Kubeconfig)
	ns := env.Namespace(t, "e2e-cleanup", nil)
	n.agentArgs = []string{"--namespace", ns}
	buildBinaries(t, n.bin)
	_, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app", Labels: map[string]string{"app": "app"}},
		Spec:       corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.startAgent()
	p := n.addPod(ns, "app")
	veth := agent.HostVethName(p.containerID, "eth0")
	vethIndex := n.ifindex(t, veth)
	// Settled: the programs moved from ADD's cls_bpf filters to tcx.
	eventually(t, 10*time.Second, "programs on tcx", func() error {
		pins, filters, err := n.attachment(p)
		if err == nil && (pins != 2 || filters != 0) {
			err = fmt.Errorf("%d pinned tcx links, %d cls_bpf filters", pins, filters)
		}
		return err
	})

	// A rolling update: SIGTERM, a new agent. Nothing was removed.
	n.stopAgent(syscall.SIGTERM)
	tcx, cg := n.attached(t, vethIndex)
	if tcx != 2 || cg != 4 {
		t.Fatalf("after SIGTERM: %d tcx and %d cgroup programs attached, want 2 and 4", tcx, cg)
	}
	conflist, plugin := filepath.Join(n.cniConf, agent.CNIConfFile), filepath.Join(n.cniBin, cni.PluginType)
	for _, f := range []string{conflist, plugin, filepath.Join(n.bpffs, "nodemesh", "links", veth+"_to_pod")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("after SIGTERM: %v", err)
		}
	}
	n.startAgent()

	// The uninstall's request, as install.Client.Uninstall makes it.
	_, err = env.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: agent.CleanupConfigMap, Namespace: ns},
		Data:       map[string]string{"reason": "uninstall"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The installer's query (install/uninstall.go cleanedNodes).
	sel := fields.AndSelectors(
		fields.OneTermEqualSelector("involvedObject.name", agent.CleanupConfigMap),
		fields.OneTermEqualSelector("reason", agent.NodeCleanedReason),
	).String()
	answers := func() (int, error) {
		evs, err := env.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return 0, err
		}
		k := 0
		for _, e := range evs.Items {
			if e.Source.Host == n.name && e.InvolvedObject.Kind == "ConfigMap" {
				t.Logf("event: %s", e.Message)
				k++
			}
		}
		return k, nil
	}
	eventually(t, 30*time.Second, "NodeCleaned event", func() error {
		k, err := answers()
		if err == nil && k != 1 {
			err = fmt.Errorf("%d %s events from %s, want 1", k, agent.NodeCleanedReason, n.name)
		}
		return err
	})

	if tcx, cg := n.attached(t, vethIndex); tcx != 0 || cg != 0 {
		t.Errorf("after cleanup: %d tcx and %d cgroup programs attached", tcx, cg)
	}
	if _, err := os.Stat(filepath.Join(n.bpffs, "nodemesh")); !errors.Is(err, fs.ErrNotExist) {
		left, _ := exec.Command("find", n.bpffs).CombinedOutput()
		t.Errorf("pins left (%v):\n%s", err, left)
	}
	for _, f := range []string{conflist, plugin} {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left (%v)", f, err)
		}
	}
	// The pod keeps its interface (it goes with the pod).
	if got := n.ifindex(t, veth); got != vethIndex {
		t.Errorf("pod veth ifindex %d, want %d", got, vethIndex)
	}
	// Up, not ready.
	select {
	case err := <-n.agentDone:
		n.agent = nil
		t.Fatalf("agent exited after the cleanup: %v\n%s", err, n.logs())
	default:
	}
	resp, err := http.Get("http://" + n.metrics + "/readyz")
	if err != nil {
		t.Fatalf("/readyz after cleanup: %v\n%s", err, n.logs())
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz after cleanup: %d, want 503", resp.StatusCode)
	}
	n.stopAgent(syscall.SIGTERM)
	if _, err := os.Stat(conflist); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("conflist written again (%v)", err)
	}

	// By hand, in the node's namespace: nothing left to remove.
	out, err := exec.Command("ip", "netns", "exec", n.netnsName("node"), filepath.Join(n.bin, "nodemesh-agent"), "cleanup",
		"--bpffs", n.bpffs, "--cni-conf-dir", n.cniConf, "--cni-bin-dir", n.cniBin, "--state-dir", n.stateDir).CombinedOutput()
	if err != nil {
		t.Fatalf("nodemesh-agent cleanup: %v\n%s", err, out)
	}
	t.Logf("nodemesh-agent cleanup:\n%s", out)
	if !strings.Contains(string(out), "detached 0 links") || !strings.Contains(string(out), "left 1 pods' veths ("+veth+")") {
		t.Errorf("nodemesh-agent cleanup output:\n%s", out)
	}

	// Reinstalled, then a plain 'helm uninstall': the request (pre-delete
	// hook) and the SIGTERM come together; the agent, stopped while the
	// request was created, cleans the node and answers before it exits.
	if err := env.Client.CoreV1().ConfigMaps(ns).Delete(ctx, agent.CleanupConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.startAgent()
	if tcx, cg := n.attached(t, vethIndex); tcx != 2 || cg != 4 {
		t.Fatalf("reinstalled: %d tcx and %d cgroup programs attached, want 2 and 4 (the pod taken over)", tcx, cg)
	}
	n.agent.Process.Signal(syscall.SIGSTOP)
	_, err = env.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: agent.CleanupConfigMap, Namespace: ns},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.agent.Process.Signal(syscall.SIGTERM)
	n.agent.Process.Signal(syscall.SIGCONT)
	select {
	case <-n.agentDone:
		n.agent = nil
	case <-time.After(25 * time.Second):
		t.Fatalf("agent did not exit after SIGTERM\n%s", n.logs())
	}
	if k, err := answers(); err != nil || k != 2 {
		t.Errorf("%d %s events from %s (%v), want 2\n%s", k, agent.NodeCleanedReason, n.name, err, n.logs())
	}
	if tcx, cg := n.attached(t, vethIndex); tcx != 0 || cg != 0 {
		t.Errorf("after SIGTERM with the request: %d tcx and %d cgroup programs attached", tcx, cg)
	}
	for _, f := range []string{conflist, plugin, filepath.Join(n.bpffs, "nodemesh")} {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after SIGTERM with the request: %s left (%v)", f, err)
		}
	}
}

// ifindex is the index of interface name in the node's namespace.
func (n *node) ifindex(t *testing.T, name string) int {
	t.Helper()
	out, err := execOut("ip", "-n", n.netnsName("node"), "-o", "link", "show", name)
	if err != nil {
		t.Fatalf("%s: %v %s", name, err, out)
	}
	var idx int
	if _, err := fmt.Sscanf(out, "%d:", &idx); err != nil {
		t.Fatalf("ip link %q: %v", out, err)
	}
	return idx
}

// attached counts the tcx programs on the node's interface ifindex and the
// redirection programs on the node's cgroup.
func (n *node) attached(t *testing.T, ifindex int) (tcx, cg int) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		target, err := netns.GetFromName(n.netnsName("node"))
		if err == nil {
			err = netns.Set(target)
			target.Close()
		}
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			if err != nil {
				break
			}
			var res *link.QueryResult
			if res, err = link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at}); err == nil {
				tcx += len(res.Programs)
			}
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(n.cgroupRoot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupSockOps, ebpf.AttachCGroupGetsockopt, ebpf.AttachCgroupInet4GetPeername} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			t.Fatal(err)
		}
		cg += len(res.Programs)
	}
	return tcx, cg
}
