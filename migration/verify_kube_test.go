package migration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/watch"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// runningController is nodemesh's controller run in-process against the
// test's API server: watch, cache, ADS server and the monitoring handler
// 'nodemesh-controller run' serves (what DebugRoutes reads).
type runningController struct {
	url string
	// stopWatch stops the watch; the cache and the debug endpoint keep
	// serving the last configuration, as a controller that lost its watch.
	stopWatch func()
}

func startController(t *testing.T, c *cluster) *runningController {
	t.Helper()
	// The controller serves the cluster's Nodes; without one the route check
	// has nothing to read (and is skipped).
	node := "node-migration"
	if _, err := c.env.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{}); err != nil {
		if _, err := c.env.Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
			t.Fatal(err)
		}
	}
	ic, err := istioclient.NewForConfig(c.env.Config)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	metrics := xds.NewMetrics(nil)
	cache := xds.NewCache(logger, metrics)
	ctl := watch.New(c.env.Client, ic, cache, watch.Options{Debounce: 20 * time.Millisecond, MaxDebounce: time.Second, Logger: logger, Metrics: metrics})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	xdstest.Serve(t, cache)
	srv := httptest.NewServer((&xds.Debug{Cache: cache, Ready: ctl.Ready, Auth: xdstest.DebugAuth}).Handler())
	t.Cleanup(srv.Close)
	deadline := time.Now().Add(30 * time.Second)
	for ctl.Ready() != nil || cache.Served(node) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("controller not serving node %s after 30s: %v", node, ctl.Ready())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &runningController{url: srv.URL, stopWatch: stop}
}

func bookinfoHosts(ns string) []string {
	var out []string
	for _, s := range []string{"details", "productpage", "ratings", "reviews"} {
		out = append(out, s+"."+ns+".svc.cluster.local")
	}
	return out
}

// probeGone fails the test when a probe Pod is left in ns.
func probeGone(t *testing.T, c *cluster, ns string) {
	t.Helper()
	pods, err := c.env.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: ProbeLabel + "=" + ProbeLabelValue})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) > 0 {
		t.Errorf("probe pod %s left in %s", pods.Items[0].Name, ns)
	}
}

// TestApplyVerifiesWithController: with the controller running, the route
// check reads its debug endpoint and passes once the namespace's Services
// are translated, and the probe Pod runs in the namespace and is deleted;
// with a controller whose watch has stopped (it never sees a new
// namespace), apply fails at the route check, names the missing Services
// and rolls back.
func TestApplyVerifiesWithController(t *testing.T) {
	c := getCluster(t)
	ctx := context.Background()
	ctl := startController(t, c)
	routes := &DebugRoutes{URL: ctl.url, Token: xdstest.DebugToken()}

	// Services the controller has not seen: each named as missing.
	missing, err := routes.Serves(ctx, bookinfoHosts("not-created-yet"))
	if err != nil || len(missing) != 4 {
		t.Fatalf("Serves for a namespace without Services: %v, %v; want all 4 missing", missing, err)
	}

	ns := c.bookinfo(t)
	// A TCP-only Service gets a filter chain, no route: apply must not
	// expect one.
	if _, err := c.env.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "mongodb", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "mongodb"}, Ports: []corev1.ServicePort{{Name: "tcp-mongo", Port: 27017}}}}); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	m := c.migrator(t)
	m.Progress = io.MultiWriter(testWriter{t}, &progress)
	m.Routes = routes
	m.Probe = &PodProbe{Client: c.env.Client, Timeout: 30 * time.Second, poll: 100 * time.Millisecond}
	if err := m.Apply(ctx, ns); err != nil {
		t.Fatalf("apply: %v", err)
	}
	for _, want := range []string{"✓ the controller serves routes for 4 Services", "✓ connectivity probe: 4 Service ports answered over HTTP from a pod in " + ns} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
	var probe *corev1.Pod
	for _, p := range c.probed() {
		if p.Namespace == ns {
			probe = &p
		}
	}
	if probe == nil {
		t.Fatal("no probe pod ran in the namespace")
	}
	ctr := probe.Spec.Containers
	if len(ctr) != 1 || hasSidecar(probe) || probe.Spec.SecurityContext == nil || probe.Spec.SecurityContext.RunAsNonRoot == nil || !*probe.Spec.SecurityContext.RunAsNonRoot ||
		ctr[0].TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError || ctr[0].Image != DefaultProbeImage("dev") ||
		!strings.Contains(strings.Join(ctr[0].Args, " "), "reviews."+ns+".svc.cluster.local:9080") {
		t.Errorf("probe pod: %+v", probe.Spec)
	}
	probeGone(t, c, ns)
	if missing, err := routes.Serves(ctx, []string{"mongodb." + ns + ".svc.cluster.local"}); err != nil || len(missing) != 1 {
		t.Errorf("the TCP-only Service: missing %v, %v; want it without a route", missing, err)
	}

	// A controller that stops watching never translates the next namespace.
	ctl.stopWatch()
	ns2 := c.bookinfo(t)
	before := take(t, c.env.Client, ns2)
	m.Probe = nil
	err = m.Apply(ctx, ns2)
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "the controller serves no route for "+strings.Join(bookinfoHosts(ns2), ", ")) {
		t.Fatalf("apply with a stale controller: %v, want ErrRolledBack naming the 4 Services", err)
	}
	if got := take(t, c.env.Client, ns2); !got.equal(before) {
		t.Errorf("after the automatic rollback:\n got %+v\nwant %+v", got, before)
	}
	c.waitPods(t, ns2, true)
}

// TestApplyProbeFailureRollsBack: a Service port that gives no HTTP
// response to the probe makes apply roll back, naming it; the probe Pod is
// deleted.
func TestApplyProbeFailureRollsBack(t *testing.T) {
	c := getCluster(t)
	ctx := context.Background()
	ns := c.bookinfo(t)
	before := take(t, c.env.Client, ns)
	c.setAnswers(func(addr string) bool { return !strings.HasPrefix(addr, "reviews."+ns+".") })
	defer c.setAnswers(nil)
	m := c.migrator(t)
	m.Probe = &PodProbe{Client: c.env.Client, Timeout: 30 * time.Second, poll: 100 * time.Millisecond}
	err := m.Apply(ctx, ns)
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "1 of 4 Service ports gave no HTTP response") ||
		!strings.Contains(err.Error(), "reviews:9080: connection failed (curl exit 7)") {
		t.Fatalf("apply: %v, want ErrRolledBack naming reviews:9080", err)
	}
	probeGone(t, c, ns)
	if got := take(t, c.env.Client, ns); !got.equal(before) {
		t.Errorf("after the automatic rollback:\n got %+v\nwant %+v", got, before)
	}
	c.waitPods(t, ns, true)
}

// TestProbeCleansUpAndTimesOut: a probe Pod left by an interrupted run is
// deleted before a new one starts; a probe Pod that never finishes is a
// failure that says why, and is deleted too.
func TestProbeCleansUpAndTimesOut(t *testing.T) {
	c := getCluster(t)
	ctx := context.Background()
	ns := c.env.Namespace(t, "probe", nil)
	if _, err := c.env.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "tcp-x", Port: 81}}}}); err != nil {
		t.Fatal(err)
	}
	c.setHold(func(p *corev1.Pod) bool { return p.Namespace == ns && p.Name == "leftover" })
	defer c.setHold(nil)
	if _, err := c.env.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "leftover", Namespace: ns, Labels: map[string]string{ProbeLabel: ProbeLabelValue}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: "x"}}}}); err != nil {
		t.Fatal(err)
	}
	p := &PodProbe{Client: c.env.Client, Timeout: 30 * time.Second, poll: 100 * time.Millisecond}
	summary, err := p.Probe(ctx, ns)
	if err != nil || !strings.HasPrefix(summary, "1 Service ports answered over HTTP from a pod in "+ns+", through the node proxy") {
		t.Fatalf("probe: %q, %v", summary, err)
	}
	probeGone(t, c, ns)

	// The stand-in kubelet never runs this one.
	c.setHold(func(p *corev1.Pod) bool { return p.Namespace == ns })
	p.Timeout, p.Image = 2*time.Second, "registry.invalid/curl"
	_, err = p.Probe(ctx, ns)
	if err == nil || !strings.Contains(err.Error(), "did not finish within 2s: phase Pending") || !strings.Contains(err.Error(), "--probe-image") {
		t.Fatalf("probe that never runs: %v", err)
	}
	probeGone(t, c, ns)
}
