//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
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
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/agent/cni"
	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// TestUninstallCleanup is the agent's side of an uninstall. Removing
// nodemesh from a node removes its policy enforcement, so only the
// uninstall may do it: the deletion of the agent's own DaemonSet, seen by
// the agent that is stopped because of it. A SIGTERM alone (a rolling
// update) leaves the node as it is, and so does the ConfigMap
// nodemesh-cleanup, which used to make every agent detach everything and
// can be created by anyone allowed to write ConfigMaps in the namespace.
// Deleting the DaemonSet makes the stopping agent detach its programs,
// remove its pins, conflist and plugin, and record NodeCleaned on the
// DaemonSet with source host = its node; also when, as with 'helm
// uninstall', its API access goes right after the DaemonSet. An agent
// started again (a reinstall) attaches everything again.
func TestUninstallCleanup(t *testing.T) {
	cgroupV2 := requireDatapath(t)
	env := kubetest.Get(t)
	ctx := context.Background()
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, cgroupV2, env.Kubeconfig)
	ns := env.Namespace(t, "e2e-cleanup", nil)
	buildBinaries(t, n.bin)
	_, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app", Labels: map[string]string{"app": "app"}},
		Spec:       corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The agent's DaemonSet and its pod on this node, as the chart and
	// the DaemonSet controller make them (no kubelet runs them: the agent
	// is a process of the test, told its pod's name).
	ds := n.agentDaemonSet(t, env, ns, "agent-1")
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
	conflist, plugin := filepath.Join(n.cniConf, agent.CNIConfFile), filepath.Join(n.cniBin, cni.PluginType)
	intact := func(t *testing.T, when string) {
		t.Helper()
		if tcx, cg := n.attached(t, vethIndex); tcx != 2 || cg != 6 {
			t.Fatalf("%s: %d tcx and %d cgroup programs attached, want 2 and 6\n%s", when, tcx, cg, n.logs())
		}
		for _, f := range []string{conflist, plugin, filepath.Join(n.bpffs, "nodemesh", "links", veth+"_to_pod")} {
			if _, err := os.Stat(f); err != nil {
				t.Fatalf("%s: %v", when, err)
			}
		}
	}

	t.Run("a rolling update (SIGTERM) removes nothing", func(t *testing.T) {
		n.stopAgent(syscall.SIGTERM)
		intact(t, "after SIGTERM")
		n.startAgent()
	})

	t.Run("the ConfigMap nodemesh-cleanup changes nothing", func(t *testing.T) {
		// Created by whoever may write ConfigMaps in the namespace; the
		// agent used to clean its node on seeing it, and at SIGTERM if
		// it had not yet.
		_, err := env.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "nodemesh-cleanup", Namespace: ns},
			Data:       map[string]string{"reason": "uninstall"},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.stopAgent(syscall.SIGTERM)
		intact(t, "ConfigMap created, agent stopped")
		n.startAgent()
		intact(t, "ConfigMap created, agent started again")
	})

	// The installer's query (install/uninstall.go cleanedNodes).
	answers := func(uid types.UID) (int, error) {
		sel := fields.AndSelectors(
			fields.OneTermEqualSelector("involvedObject.uid", string(uid)),
			fields.OneTermEqualSelector("reason", api.NodeCleanedReason),
		).String()
		evs, err := env.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return 0, err
		}
		k := 0
		for _, e := range evs.Items {
			if e.Source.Host == n.name && e.InvolvedObject.Kind == "DaemonSet" {
				t.Logf("event: %s", e.Message)
				k++
			}
		}
		return k, nil
	}
	// cleaned checks that nothing of nodemesh is left on the node but the
	// pod's veth.
	cleaned := func(t *testing.T) {
		t.Helper()
		if tcx, cg := n.attached(t, vethIndex); tcx != 0 || cg != 0 {
			t.Errorf("after cleanup: %d tcx and %d cgroup programs attached\n%s", tcx, cg, n.logs())
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
	}

	// deleteDS deletes ds as 'nodemesh uninstall' and 'helm uninstall'
	// do; the garbage collector would then delete the agent's pod, and
	// the kubelet send SIGTERM.
	deleteDS := func(t *testing.T, ds *appsv1.DaemonSet) {
		t.Helper()
		if err := env.Client.AppsV1().DaemonSets(ns).Delete(ctx, ds.Name, metav1.DeleteOptions{
			PropagationPolicy: ptr(metav1.DeletePropagationBackground)}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("nodemesh uninstall: the DaemonSet is deleted, the stopping agent cleans its node", func(t *testing.T) {
		deleteDS(t, ds)
		eventually(t, 30*time.Second, "the agent saw its DaemonSet deleted", func() error {
			if v := n.metricValues(t)["nodemesh_agent_uninstall_pending"]; v != 1 {
				return fmt.Errorf("nodemesh_agent_uninstall_pending %v", v)
			}
			return nil
		})
		intact(t, "DaemonSet deleted, agent running") // the decision is the stopping agent's
		n.stopAgent(syscall.SIGTERM)
		cleaned(t)
		if k, err := answers(ds.UID); err != nil || k != 1 {
			t.Errorf("%d %s events from %s on the DaemonSet (%v), want 1\n%s", k, api.NodeCleanedReason, n.name, err, n.logs())
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
	})

	// helm uninstall deletes the DaemonSet and, milliseconds later
	// (Helm's UninstallOrder), the agent's bindings and ServiceAccount:
	// the agent may be stopped when it can no longer read its DaemonSet,
	// and only the watch it already holds, which outlives them, can tell
	// it. Each case reinstalls first: a new DaemonSet and agent pod, the
	// agent running as a ServiceAccount of its own; it takes the pod over.
	for i, tc := range []struct {
		name string
		// uninstall deletes ds and revokes the agent's access, sending
		// SIGTERM at the worst moment.
		uninstall func(t *testing.T, ds *appsv1.DaemonSet, revoke func(), revoked func(*testing.T))
	}{
		{"helm uninstall: the SIGTERM comes before the watch delivered the deletion", func(t *testing.T, ds *appsv1.DaemonSet, revoke func(), revoked func(*testing.T)) {
			// Stopped, the agent's watch delivers nothing yet.
			n.agent.Process.Signal(syscall.SIGSTOP)
			deleteDS(t, ds)
			revoke()
			revoked(t)
			n.agent.Process.Signal(syscall.SIGTERM)
			n.agent.Process.Signal(syscall.SIGCONT)
		}},
		{"helm uninstall: the deletion reaches the agent only after its SIGTERM", func(t *testing.T, ds *appsv1.DaemonSet, revoke func(), revoked func(*testing.T)) {
			n.agent.Process.Signal(syscall.SIGSTOP)
			revoke()
			revoked(t)
			n.agent.Process.Signal(syscall.SIGTERM)
			n.agent.Process.Signal(syscall.SIGCONT)
			// The agent's GET is refused; its watch must still run.
			deleteDS(t, ds)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := n.agentDaemonSet(t, env, ns, fmt.Sprintf("agent-%d", i+2))
			kubeconfig, saClient, revoke := serviceAccountKubeconfig(t, env, ns, fmt.Sprintf("agent-%d", i+2), n.scratch)
			n.kubeconfig = kubeconfig
			defer func() { n.kubeconfig = env.Kubeconfig }()
			n.startAgent()
			intact(t, "reinstalled")
			tc.uninstall(t, ds, revoke, func(t *testing.T) {
				eventually(t, 30*time.Second, "the agent's access revoked", func() error {
					_, err := saClient.AppsV1().DaemonSets(ns).Get(ctx, ds.Name, metav1.GetOptions{})
					if !apierrors.IsForbidden(err) && !apierrors.IsUnauthorized(err) {
						return fmt.Errorf("GET as the agent: %v", err)
					}
					return nil
				})
			})
			n.stopAgent(syscall.SIGTERM)
			cleaned(t)
			if logs := n.lastLog(); !strings.Contains(logs, `reason="the watch saw DaemonSet nodemesh-agent deleted"`) || !strings.Contains(logs, "node cleaned") {
				t.Errorf("the agent's log does not say its watch told it and it cleaned\n%s", logs)
			}
		})
	}

	t.Run("an agent started again attaches everything again", func(t *testing.T) {
		n.agentDaemonSet(t, env, ns, "agent-4")
		n.startAgent()
		intact(t, "started again")
	})
}

// agentDaemonSet creates a DaemonSet standing for the chart's and the pod
// podName it owns on n (the DaemonSet controller's), and has the agent
// started next told so (--namespace, --pod-name). The pod of an earlier
// call is deleted: no garbage collector runs.
func (n *node) agentDaemonSet(t *testing.T, env *kubetest.Env, ns, podName string) *appsv1.DaemonSet {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app.kubernetes.io/name": "nodemesh-agent"}
	ds, err := env.Client.AppsV1().DaemonSets(ns).Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nodemesh-agent", Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "example.invalid/agent"}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range n.agentArgs {
		if strings.HasPrefix(a, "--pod-name=") {
			_ = env.Client.CoreV1().Pods(ns).Delete(ctx, strings.TrimPrefix(a, "--pod-name="), metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
		}
	}
	_, err = env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: podName, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))}},
		Spec: corev1.PodSpec{NodeName: n.name, HostNetwork: true, Containers: []corev1.Container{{Name: "agent", Image: "example.invalid/agent"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.agentArgs = []string{"--namespace=" + ns, "--pod-name=" + podName}
	return ds
}

// serviceAccountKubeconfig makes a ServiceAccount name bound to
// cluster-admin and a kubeconfig with a token of it in dir; revoke deletes
// the binding and the ServiceAccount, as 'helm uninstall' does the agent's.
func serviceAccountKubeconfig(t *testing.T, env *kubetest.Env, ns, name, dir string) (path string, client kubernetes.Interface, revoke func()) {
	t.Helper()
	ctx := context.Background()
	sa, err := env.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	crb, err := env.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa.Name}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	revoke = func() {
		_ = env.Client.RbacV1().ClusterRoleBindings().Delete(ctx, crb.Name, metav1.DeleteOptions{})
		_ = env.Client.CoreV1().ServiceAccounts(ns).Delete(ctx, sa.Name, metav1.DeleteOptions{})
	}
	t.Cleanup(revoke)
	tok, err := env.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = tok.Status.Token
	if client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	caData := env.Config.CAData
	if len(caData) == 0 && env.Config.CAFile != "" {
		if caData, err = os.ReadFile(env.Config.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: caData}
	kc.AuthInfos["agent"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "agent"}
	kc.CurrentContext = "e2e"
	path = filepath.Join(dir, name+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path, client, revoke
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
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupUDP4Sendmsg, ebpf.AttachCGroupUDP4Recvmsg, ebpf.AttachCGroupSockOps, ebpf.AttachCGroupGetsockopt, ebpf.AttachCgroupInet4GetPeername} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			t.Fatal(err)
		}
		cg += len(res.Programs)
	}
	return tcx, cg
}
