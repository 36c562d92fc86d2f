package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

var (
	vsGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	drGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
	npGVR = schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"}
	tpGVR = schema.GroupVersionResource{Group: "nodemesh.io", Version: "v1alpha1", Resource: "trafficpolicies"}
)

// meshRunner stands in for a working nodemesh: it answers each command from
// what the cluster holds when it runs — so a test passes only if the
// framework applied its resources first. skew makes the weighted split
// come out 50/50.
type meshRunner struct {
	s    *Suite
	env  func() *Env
	skew bool
	mu   sync.Mutex
	ran  []string
}

func (m *meshRunner) Exec(ctx context.Context, ns, pod, container string, cmd []string) (string, string, error) {
	m.mu.Lock()
	m.ran = append(m.ran, ns+"/"+pod+": "+strings.Join(cmd, " "))
	m.mu.Unlock()
	e := m.env()
	optedIn := ns == e.Namespace
	exists := func(gvr schema.GroupVersionResource, name string) bool {
		_, err := m.s.Dynamic.Resource(gvr).Namespace(e.Namespace).Get(ctx, name, metav1.GetOptions{})
		return err == nil
	}
	full := strings.Join(cmd, " ")
	if cmd[0] == "sh" { // curlLoop
		n := e.Opts.Requests
		if strings.Contains(full, "while [ $i -lt 10 ]") {
			n = 10
		}
		v1, v2 := e.Pods["echo-same-node"].Name, e.Pods["echo-other-node"].Name
		var lines []string
		vs, err := m.s.Dynamic.Resource(vsGVR).Namespace(e.Namespace).Get(ctx, "echo", metav1.GetOptions{})
		for i := 0; i < n; i++ {
			switch {
			case err != nil || !optedIn:
				lines = append(lines, []string{v1, v2}[i%2]) // round robin
			case strings.Contains(fmt.Sprint(vs.Object["spec"]), "match"):
				if strings.Contains(full, CheckHeader) {
					lines = append(lines, v2)
				} else {
					lines = append(lines, v1)
				}
			case m.skew:
				lines = append(lines, []string{v1, v2}[i%2])
			default:
				if i%5 == 4 {
					lines = append(lines, v2)
				} else {
					lines = append(lines, v1)
				}
			}
		}
		return strings.Join(lines, "\n") + "\n", "", nil
	}
	url := cmd[len(cmd)-1]
	blocked := func() (string, string, error) {
		return "000", "curl: (28) Connection timed out after 2001 milliseconds", errors.New("command terminated with exit code 28")
	}
	if strings.Contains(url, e.Pods["echo-other-node"].IP+":") && optedIn && strings.HasPrefix(pod, "client") && exists(tpGVR, "deny-client-to-echo-other-node") {
		return blocked()
	}
	if strings.Contains(url, e.Pods["echo-plain"].IP+":") && optedIn && strings.HasPrefix(pod, "client") && exists(npGVR, "client-egress-dns-and-echo") {
		return blocked()
	}
	if strings.Contains(url, e.Pods["echo-other-node"].IP+":") && exists(npGVR, "deny-echo-other-node") {
		return "000", "curl: (28) Connection timed out after 2001 milliseconds", errors.New("command terminated with exit code 28")
	}
	if strings.Contains(url, "echo-same-node.") && optedIn && exists(vsGVR, "echo-same-node") {
		return "418", "", nil
	}
	return "200", "", nil
}

// readyPods plays kubelet and scheduler: it gives every Deployment of the
// check a ready pod, on node-a, or node-b for echo-other-node.
func readyPods(ctx context.Context, t *testing.T, env *kubetest.Env, namespaces ...string) {
	done := map[string]bool{}
	ip := 10
	for ctx.Err() == nil {
		for _, ns := range namespaces {
			deps, err := env.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				continue
			}
			for _, d := range deps.Items {
				if done[ns+"/"+d.Name] {
					continue
				}
				node := "node-a"
				if d.Name == "echo-other-node" {
					node = "node-b"
				}
				ip++
				p := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-7c9d5", Namespace: ns, Labels: d.Spec.Template.Labels},
					Spec:       *d.Spec.Template.Spec.DeepCopy(),
					Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.244.0.%d", ip), HostIP: map[string]string{"node-a": "172.30.0.2", "node-b": "172.30.0.3"}[node],
						Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
				}
				p.Spec.NodeName = node
				if _, err := env.Create(ctx, p); err != nil && ctx.Err() == nil {
					t.Errorf("create pod: %v", err)
				}
				done[ns+"/"+d.Name] = true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func runCheck(t *testing.T, skew bool, filters []string) (*Report, string, *meshRunner, *Env, error) {
	t.Helper()
	env := kubetest.Get(t)
	ns := fmt.Sprintf("nodemesh-check-%d", time.Now().UnixNano()%1_000_000)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	runner := &meshRunner{skew: skew}
	envoyDaemonSet(ctx, t, env)
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		t.Fatal(err)
	}
	s, err := NewSuite(env.Config, runner, nil, Options{Namespace: ns, Filters: filters, Out: &out, ReadyTimeout: 30 * time.Second, Requests: 50})
	if err != nil {
		t.Fatal(err)
	}
	runner.s = s
	var seen *Env
	var mu sync.Mutex
	// The suite builds its Env in Run; the fake reads it through the pods.
	runner.env = func() *Env {
		mu.Lock()
		defer mu.Unlock()
		if seen == nil {
			seen = &Env{Namespace: ns, PlainNamespace: ns + "-plain", Opts: &s.opts, Pods: map[string]Pod{}}
			for _, w := range []struct{ name, ns string }{{"echo-same-node", ns}, {"echo-other-node", ns}, {"echo-plain", ns + "-plain"}} {
				p, err := env.Client.CoreV1().Pods(w.ns).Get(ctx, w.name+"-7c9d5", metav1.GetOptions{})
				if err == nil {
					seen.Pods[w.name] = Pod{Name: p.Name, IP: p.Status.PodIP}
				}
			}
		}
		return seen
	}
	podCtx, stopPods := context.WithCancel(ctx)
	go readyPods(podCtx, t, env, ns, ns+"-plain")
	rep, err := s.Run(ctx)
	stopPods()
	return rep, out.String(), runner, seen, err
}

// TestCheckFramework deploys the workloads into the real API server, runs
// every test with a runner that answers as a working mesh would, and checks
// the quiet output, the JUnit file and that everything was removed.
func TestCheckFramework(t *testing.T) {
	rep, out, runner, env, err := runCheck(t, false, nil)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if rep.Failed() {
		t.Fatalf("a test failed:\n%s", out)
	}
	for _, want := range []string{
		"✅ pod-to-pod (2 actions)\n", "✅ pod-to-service (2 actions)\n", "✅ vs-weighted-split (1 actions)\n",
		"✅ vs-header-match (2 actions)\n", "✅ vs-fault-abort (1 actions)\n", "✅ networkpolicy-deny (2 actions)\n",
		"✅ not-opted-in-untouched (3 actions)\n", "⏭️  sidecar-interop: skipped (Istio (istiod) is not installed)\n",
		"📋 ✅ all 10 tests passed (19 actions), 2 skipped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if len(runner.ran) != 19 {
		t.Errorf("ran %d commands, want 19", len(runner.ran))
	}
	// The workloads were placed as asked and the namespaces labelled.
	kenv := kubetest.Get(t)
	ctx := context.Background()
	ns, err := kenv.Client.CoreV1().Namespaces().Get(ctx, env.Namespace, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Labels["istio.io/dataplane-mode"] != "nodemesh" || ns.DeletionTimestamp == nil {
		t.Errorf("check namespace: labels %v, deleted %v", ns.Labels, ns.DeletionTimestamp)
	}
	plain, err := kenv.Client.CoreV1().Namespaces().Get(ctx, env.PlainNamespace, metav1.GetOptions{})
	if err != nil || plain.Labels["istio.io/dataplane-mode"] != "" || plain.DeletionTimestamp == nil {
		t.Errorf("plain namespace: %v %v", plain.Labels, err)
	}
	// Every test resource is gone (namespace deletion alone would not show:
	// without kube-controller-manager it never completes).
	for _, gvr := range []schema.GroupVersionResource{vsGVR, drGVR, npGVR} {
		list, err := runner.s.Dynamic.Resource(gvr).Namespace(env.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		if err == nil && len(list.Items) > 0 {
			t.Errorf("%s left behind: %d", gvr.Resource, len(list.Items))
		}
	}

	var junit bytes.Buffer
	if err := WriteJUnit(&junit, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<testsuites tests="12" failures="0" skipped="2"`, `<testcase name="vs-weighted-split" classname="nodemesh-check"`, `<skipped message="Istio (istiod) is not installed"></skipped>`} {
		if !strings.Contains(junit.String(), want) {
			t.Errorf("junit lacks %q:\n%s", want, junit.String())
		}
	}
}

// TestCheckFailure: a split outside the tolerance fails its test with the
// details; the other selected tests stay quiet.
func TestCheckFailure(t *testing.T) {
	rep, out, _, _, err := runCheck(t, true, []string{"vs-", "!header"})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if !rep.Failed() || len(rep.Tests) != 2 {
		t.Fatalf("want 2 tests with a failure:\n%s", out)
	}
	for _, want := range []string{
		"❌ vs-weighted-split\n   ❌ weighted-80-20/client → echo ×50: echo-same-node answered 50%, want 80% ±10\n",
		"      from nodemesh-check-", "stdout: echo-same-node-7c9d5 ⏎ echo-other-node-7c9d5",
		"✅ vs-fault-abort (1 actions)\n",
		"📋 ❌ 1 of 2 tests failed (1 of 2 actions), 1 passed, 0 skipped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "pod-to-pod") {
		t.Errorf("filtered tests ran:\n%s", out)
	}
	path := filepath.Join(t.TempDir(), "junit.xml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteJUnit(f, rep); err != nil {
		t.Fatal(err)
	}
	f.Close()
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `<failure message="weighted-80-20/client → echo ×50: echo-same-node answered 50%, want 80% ±10">`) {
		t.Errorf("junit:\n%s", data)
	}
}

func TestSelect(t *testing.T) {
	all := DefaultTests()
	names := func(ts []Test) string {
		var n []string
		for _, t := range ts {
			n = append(n, t.Name)
		}
		return strings.Join(n, ",")
	}
	for filters, want := range map[string]string{
		"":                "pod-to-pod,pod-to-service,vs-weighted-split,vs-header-match,vs-fault-abort,networkpolicy-deny,trafficpolicy-deny,dns-egress-policy,pod-to-node,not-opted-in-untouched,not-opted-in-untouched-l4,sidecar-interop",
		"^vs-":            "vs-weighted-split,vs-header-match,vs-fault-abort",
		"!^vs-,!sidecar":  "pod-to-pod,pod-to-service,networkpolicy-deny,trafficpolicy-deny,dns-egress-policy,pod-to-node,not-opted-in-untouched,not-opted-in-untouched-l4",
		"pod,!to-service": "pod-to-pod,pod-to-node",
	} {
		var fs []string
		if filters != "" {
			fs = strings.Split(filters, ",")
		}
		got, err := Select(all, fs)
		if err != nil || names(got) != want {
			t.Errorf("%q: %s %v, want %s", filters, names(got), err, want)
		}
	}
	if _, err := Select(all, []string{"nothing-matches"}); err == nil {
		t.Error("no match must be an error")
	}
	if _, err := Select(all, []string{"("}); err == nil {
		t.Error("a bad regular expression must be an error")
	}
}

// envoyDaemonSet creates the node Envoy DaemonSet of an installed nodemesh
// (the L7 tests run only where Envoy is the node proxy).
func envoyDaemonSet(ctx context.Context, t *testing.T, env *kubetest.Env) {
	t.Helper()
	labels := map[string]string{"app": api.EnvoyName}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: api.EnvoyName, Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "envoy", Image: "envoy", Args: []string{"--config-path=/etc/envoy/bootstrap.yaml"}}}}}}}
	if _, err := env.Client.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}
