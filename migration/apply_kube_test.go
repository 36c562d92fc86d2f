package migration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// cluster is a real API server with kube-controller-manager, Istio's
// sidecar injector played by a mutating webhook of this test binary, and a
// stand-in kubelet that marks Pods running and ready (none runs here) and
// "runs" probe Pods.
type cluster struct {
	env *kubetest.Env
	dyn dynamic.Interface
	// hold, when it returns true for a Pod, keeps it from becoming ready.
	mu   sync.Mutex
	hold func(*corev1.Pod) bool
	// answers says whether a probe target (host:port) answers over HTTP
	// (nil: all do).
	answers func(addr string) bool
	// probes are the probe Pods the stand-in kubelet ran.
	probes []corev1.Pod
}

var (
	clusterOnce sync.Once
	theCluster  *cluster
)

func getCluster(t *testing.T) *cluster {
	t.Helper()
	env := kubetest.DedicatedKCM(t, "migration")
	clusterOnce.Do(func() {
		c := &cluster{env: env}
		var err error
		if c.dyn, err = dynamic.NewForConfig(env.Config); err != nil {
			t.Fatal(err)
		}
		kubetest.StartSidecarInjector(t, c.env.Client, "docker.io/istio/proxyv2:1.27.1")
		go c.kubelet()
		ctx := context.Background()
		env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nodemesh-system"}}, metav1.CreateOptions{})
		one := int32(0)
		env.Client.AppsV1().Deployments("nodemesh-system").Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: ControllerDeployment},
			Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "c"}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "c"}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nodemesh/controller"}}}}},
		}, metav1.CreateOptions{})
		theCluster = c
	})
	if theCluster == nil {
		t.Fatal("cluster setup failed")
	}
	return theCluster
}

func (c *cluster) setHold(f func(*corev1.Pod) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = f
}

func (c *cluster) setAnswers(f func(addr string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answers = f
}

func (c *cluster) probed() []corev1.Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.probes)
}

// runProbe ends a probe Pod as the kubelet would after its script ran:
// the targets are the script's arguments; the termination message has the
// script's format (probeScript, whose real run is TestProbeScript).
func (c *cluster) runProbe(p *corev1.Pod) {
	c.mu.Lock()
	answers := c.answers
	c.probes = append(c.probes, *p.DeepCopy())
	c.mu.Unlock()
	args := p.Spec.Containers[0].Args
	targets := args[slices.Index(args, "nodemesh-probe")+1:]
	var msg strings.Builder
	n := 0
	for _, t := range targets {
		t = strings.TrimPrefix(t, "h2:")
		if answers == nil || answers(t) {
			n++
		} else {
			fmt.Fprintf(&msg, "%s 000 7\n", t)
		}
	}
	fmt.Fprintf(&msg, "done %d %d\n", n, len(targets))
	// A stand-in kubelet has no node proxy: it records what one would have
	// carried. The real chain (the stand-in node proxy's record read by the
	// probe on a real node) runs in test/cluster.
	fmt.Fprintf(&msg, "proxy stand-in %d\n", n)
	code, phase, reason := int32(0), corev1.PodSucceeded, "Completed"
	if n < len(targets) {
		code, phase, reason = 1, corev1.PodFailed, "Error"
	}
	now := metav1.Now()
	p.Status.Phase = phase
	p.Status.StartTime = &now
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: p.Spec.Containers[0].Name, Image: p.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: code, Reason: reason, Message: msg.String(), StartedAt: now, FinishedAt: now}},
	}}
	c.env.Client.CoreV1().Pods(p.Namespace).UpdateStatus(context.Background(), p, metav1.UpdateOptions{})
}

// kubelet marks every Pod running and ready with an address, unless held;
// it ends probe Pods (runProbe).
func (c *cluster) kubelet() {
	ctx := context.Background()
	n := 0
	for {
		pods, err := c.env.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err == nil {
			for i := range pods.Items {
				p := &pods.Items[i]
				if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
					continue
				}
				c.mu.Lock()
				held := c.hold != nil && c.hold(p)
				c.mu.Unlock()
				if held {
					continue
				}
				if p.Labels[ProbeLabel] == ProbeLabelValue {
					c.runProbe(p)
					continue
				}
				n++
				now := metav1.Now()
				p.Status.Phase = corev1.PodRunning
				p.Status.PodIP = "10.244." + strconv.Itoa(n/250%250) + "." + strconv.Itoa(n%250+1)
				p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
				p.Status.Conditions = []corev1.PodCondition{
					{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
					{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				}
				p.Status.StartTime = &now
				c.env.Client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// bookinfo creates the project's bookinfo app in a fresh namespace labelled
// for injection and waits until its Pods run with sidecars.
func (c *cluster) bookinfo(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	ns := c.env.Namespace(t, "bookinfo", map[string]string{InjectionLabel: "enabled"})
	data, err := os.ReadFile("../samples/bookinfo/platform/bookinfo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if u.Object == nil || u.GetKind() == "Namespace" {
			continue
		}
		u.SetNamespace(ns)
		gvk := u.GroupVersionKind()
		gvr := schema.GroupVersionResource{Group: gvk.Group, Version: gvk.Version, Resource: strings.ToLower(gvk.Kind) + "s"}
		if _, err := c.dyn.Resource(gvr).Namespace(ns).Create(ctx, &u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s: %v", gvk.Kind, u.GetName(), err)
		}
	}
	c.waitPods(t, ns, true)
	return ns
}

// waitPods waits until every Deployment is rolled out and its Pods have
// (or have not) a sidecar.
func (c *cluster) waitPods(t *testing.T, ns string, sidecar bool) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ready, why := true, ""
		deps, err := c.env.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range deps.Items {
			if ok, w, _ := deploymentReady(&deps.Items[i]); !ok {
				ready, why = false, deps.Items[i].Name+": "+w
			}
		}
		with, total, err := (&Migrator{Client: c.env.Client}).sidecarPods(ctx, ns)
		if err != nil {
			t.Fatal(err)
		}
		if ready && total == len(deps.Items) && (sidecar && with == total || !sidecar && with == 0) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s: not settled (sidecar=%v): %d/%d pods with sidecars; %s", ns, sidecar, with, total, why)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// snapshot is what apply changes and rollback must restore.
type snapshot struct {
	labels    map[string]string
	templates map[string]map[string]string // deployment → template annotations
}

func take(t *testing.T, c kubernetes.Interface, ns string) snapshot {
	t.Helper()
	ctx := context.Background()
	obj, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := snapshot{labels: obj.Labels, templates: map[string]map[string]string{}}
	deps, err := c.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		s.templates[d.Name] = d.Spec.Template.Annotations
	}
	return s
}

func (s snapshot) equal(o snapshot) bool {
	if !mapsEqual(s.labels, o.labels) || len(s.templates) != len(o.templates) {
		return false
	}
	for k, v := range s.templates {
		if !mapsEqual(v, o.templates[k]) {
			return false
		}
	}
	return true
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func replicaSets(t *testing.T, c kubernetes.Interface, ns string) map[string]int {
	t.Helper()
	rss, err := c.AppsV1().ReplicaSets(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, rs := range rss.Items {
		for _, o := range rs.OwnerReferences {
			out[o.Name]++
		}
	}
	return out
}

func (c *cluster) migrator(t *testing.T) *Migrator {
	return &Migrator{Client: c.env.Client, Dynamic: c.dyn, Progress: testWriter{t}, RolloutTimeout: 45 * time.Second}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestApplyAndRollback: analyze → plan → apply → labels, record and
// restarts as expected → rollback → the original state, sidecars back.
func TestApplyAndRollback(t *testing.T) {
	c := getCluster(t)
	ctx := context.Background()
	ns := c.bookinfo(t)
	before := take(t, c.env.Client, ns)
	rsBefore := replicaSets(t, c.env.Client, ns)

	inv, err := LoadCluster(ctx, c.dyn)
	if err != nil {
		t.Fatal(err)
	}
	r := Analyze(inv, Options{Namespaces: []string{ns}})
	nr := r.Namespace(ns)
	if nr.Verdict != Ready || nr.Inventory.Dataplane != "sidecar" || nr.Inventory.SidecarPods != 6 {
		t.Fatalf("analysis of %s: verdict %s, inventory %+v, findings %+v", ns, nr.Verdict, nr.Inventory, nr.Findings)
	}
	p, err := MakePlan(inv, r, ns)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(p.Steps); got != 10 {
		t.Errorf("plan has %d steps, want preflight, record, relabel, 6 restarts, verify", got)
	}

	m := c.migrator(t)
	if err := m.Apply(ctx, ns); err != nil {
		t.Fatalf("apply: %v", err)
	}
	obj, _ := c.env.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if obj.Labels[api.DataplaneModeLabel] != api.DataplaneModeNodemesh || obj.Labels[InjectionLabel] != "" || obj.Annotations[PhaseAnnotation] != phaseApplied {
		t.Errorf("namespace after apply: labels %v annotations %v", obj.Labels, obj.Annotations)
	}
	if _, err := c.env.Client.CoreV1().ConfigMaps(ns).Get(ctx, BackupConfigMap, metav1.GetOptions{}); err != nil {
		t.Errorf("backup ConfigMap: %v", err)
	}
	after := take(t, c.env.Client, ns)
	for name, ann := range after.templates {
		if ann[restartAnnotation] == "" {
			t.Errorf("deployment %s was not restarted", name)
		}
	}
	rsAfter := replicaSets(t, c.env.Client, ns)
	for name, n := range rsBefore {
		if rsAfter[name] != n+1 {
			t.Errorf("deployment %s: %d ReplicaSets after apply, want %d (one new per restart)", name, rsAfter[name], n+1)
		}
	}
	c.waitPods(t, ns, false)
	if err := m.Apply(ctx, ns); !errors.Is(err, ErrAlreadyMigrated) {
		t.Errorf("apply again: %v, want ErrAlreadyMigrated", err)
	}

	if err := m.Rollback(ctx, ns); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if got := take(t, c.env.Client, ns); !got.equal(before) {
		t.Errorf("after rollback:\n got %+v\nwant %+v", got, before)
	}
	if _, err := c.env.Client.CoreV1().ConfigMaps(ns).Get(ctx, BackupConfigMap, metav1.GetOptions{}); err == nil {
		t.Error("the backup ConfigMap is still there after rollback")
	}
	c.waitPods(t, ns, true)
	if err := m.Rollback(ctx, ns); !errors.Is(err, ErrNoBackup) {
		t.Errorf("rollback again: %v, want ErrNoBackup", err)
	}
}

// TestApplyRollsBackOnFailure: a rollout that never becomes ready makes
// apply roll back by itself, to the original state.
func TestApplyRollsBackOnFailure(t *testing.T) {
	c := getCluster(t)
	ctx := context.Background()
	ns := c.bookinfo(t)
	before := take(t, c.env.Client, ns)
	c.setHold(func(p *corev1.Pod) bool {
		return p.Namespace == ns && p.Labels["app"] == "reviews" && p.Labels["version"] == "v2" && p.Annotations[restartAnnotation] != ""
	})
	defer c.setHold(nil)
	m := c.migrator(t)
	m.RolloutTimeout = 8 * time.Second
	err := m.Apply(ctx, ns)
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "reviews-v2") {
		t.Fatalf("apply: %v, want ErrRolledBack naming reviews-v2", err)
	}
	if got := take(t, c.env.Client, ns); !got.equal(before) {
		t.Errorf("after the automatic rollback:\n got %+v\nwant %+v", got, before)
	}
	c.waitPods(t, ns, true)
}

// TestApplyResumes: an apply interrupted after some restarts completes when
// run again, restarting each workload once.
func TestApplyResumes(t *testing.T) {
	c := getCluster(t)
	ctx := context.Background()
	ns := c.bookinfo(t)
	rsBefore := replicaSets(t, c.env.Client, ns)
	m := c.migrator(t)
	m.AfterStep = func(step string) error {
		if step == "restart Deployment/productpage-v1" {
			return ErrInterrupted
		}
		return nil
	}
	if err := m.Apply(ctx, ns); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted apply: %v", err)
	}
	mid := take(t, c.env.Client, ns)
	m.AfterStep = nil
	if err := m.Apply(ctx, ns); err != nil {
		t.Fatalf("resumed apply: %v", err)
	}
	end := take(t, c.env.Client, ns)
	for _, name := range []string{"details-v1", "productpage-v1"} {
		if mid.templates[name][restartAnnotation] != end.templates[name][restartAnnotation] {
			t.Errorf("%s was restarted again by the resumed run", name)
		}
	}
	rsAfter := replicaSets(t, c.env.Client, ns)
	for name, n := range rsBefore {
		if rsAfter[name] != n+1 {
			t.Errorf("deployment %s: %d ReplicaSets, want %d", name, rsAfter[name], n+1)
		}
	}
	c.waitPods(t, ns, false)
}

// TestApplyBadInput: one clear error each, nothing changed.
func TestApplyBadInput(t *testing.T) {
	c := getCluster(t)
	ctx := context.Background()
	m := c.migrator(t)
	if err := m.Apply(ctx, "does-not-exist"); !errors.Is(err, ErrNamespaceNotFound) {
		t.Errorf("missing namespace: %v", err)
	}
	migrated := c.env.Namespace(t, "migrated", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	if err := m.Apply(ctx, migrated); !errors.Is(err, ErrAlreadyMigrated) {
		t.Errorf("migrated namespace: %v", err)
	}
	plain := c.env.Namespace(t, "plain", map[string]string{InjectionLabel: "enabled"})
	before := take(t, c.env.Client, plain)
	other := c.migrator(t)
	other.ControllerNamespace = "nowhere"
	if err := other.Apply(ctx, plain); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("not installed: %v", err)
	}
	cfg := *c.env.Config
	cfg.Impersonate.UserName = "alice" // no RBAC at all
	alice, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	limited := &Migrator{Client: alice, Progress: testWriter{t}}
	if err := limited.Apply(ctx, plain); !errors.Is(err, ErrForbidden) {
		t.Errorf("no permissions: %v", err)
	}
	if got := take(t, c.env.Client, plain); !got.equal(before) {
		t.Errorf("bad input changed the namespace: %+v", got)
	}
}
