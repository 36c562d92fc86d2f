package watch_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/anypb"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/watch"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// controller runs a controller against the cluster behind cfg until the
// test ends.
type controller struct {
	*watch.Controller
	cache   *xds.Cache
	metrics *xds.Metrics
	addr    string
}

// startController starts one (debounce 0: the default).
func startController(t testing.TB, cfg *rest.Config, debounce time.Duration) *controller {
	t.Helper()
	return startControllerWith(t, cfg, watch.Options{Debounce: debounce})
}

// startControllerWith starts one with options (its probe interval, logger
// and metrics are the test's).
func startControllerWith(t testing.TB, cfg *rest.Config, opts watch.Options) *controller {
	t.Helper()
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := istioclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() && os.Getenv("NODEMESH_TEST_LOGS") == "1" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	c := &controller{metrics: xds.NewMetrics(nil)}
	c.cache = xds.NewCache(logger, c.metrics)
	opts.ProbeInterval, opts.Logger, opts.Metrics = 200*time.Millisecond, logger, c.metrics
	c.Controller = watch.New(kube, ic, c.cache, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	c.addr = xdstest.Serve(t, c.cache)
	deadline := time.Now().Add(30 * time.Second)
	for c.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("controller not ready after 30s: %v", c.Ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c
}

// deploy creates bookinfo's objects in the API server.
func deploy(t *testing.T, env *kubetest.Env, b *xdstest.Bookinfo) {
	t.Helper()
	ctx := context.Background()
	for _, o := range b.Objects {
		if _, err := env.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
}

// TestControllerServesCluster creates bookinfo through client-go and
// follows what a gRPC client does as the VirtualService is updated and
// deleted in the API server; a broken VirtualService gets an Event and
// stops nothing else.
func TestControllerServesCluster(t *testing.T) {
	env, ctx, ns, b := bookinfoIn(t, 3*time.Minute)
	c := startController(t, env.Config, 20*time.Millisecond)

	client := xdstest.NewGRPCClient(t, c.addr, "grpc-"+ns)
	xdstest.CheckBookinfo(t, ctx, b, client)
	reviews := client.Dial(b.Target("reviews"))

	vsClient := env.Istio.NetworkingV1().VirtualServices(ns)
	vs, err := vsClient.Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vs.Spec = *b.VirtualService(t, xdstest.ReviewsAllV3).Spec.DeepCopy()
	if _, err := vsClient.Update(ctx, vs, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	xdstest.WaitRouting(t, ctx, reviews, 10*time.Second, "all reviews traffic on v3 after the update", xdstest.Only("reviews-v3"))

	if err := vsClient.Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	xdstest.WaitRouting(t, ctx, reviews, 10*time.Second, "default route over v1, v2 and v3 after the delete", func(t xdstest.Tally) bool {
		return t["reviews-v1"] > 0 && t["reviews-v2"] > 0 && t["reviews-v3"] > 0 && t["reviews-v1"]+t["reviews-v2"]+t["reviews-v3"] == t.Total()
	})

	// A VirtualService routing to a subset no DestinationRule defines: an
	// Event on it; ratings keeps its routing.
	broken := b.VirtualService(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-broken, namespace: {{.Namespace}}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v9}
`)
	if _, err := vsClient.Create(ctx, broken, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, ctx, env, ns, "VirtualService", "reviews-broken", "SubsetNotFound")
	if !strings.Contains(ev.Message, "v9") || ev.Source.Component != watch.EventComponent || ev.Type != corev1.EventTypeWarning {
		t.Errorf("event: %s %s from %s: %q", ev.Type, ev.Reason, ev.Source.Component, ev.Message)
	}
	ratings := client.Dial(b.Target("ratings"))
	if tally := xdstest.Calls(ctx, ratings, 10); tally["ratings-v1"] != 10 {
		t.Errorf("ratings after a broken VirtualService elsewhere: %v", tally)
	}
}

func waitEvent(t *testing.T, ctx context.Context, env *kubetest.Env, ns, kind, name, reason string) corev1.Event {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs, err := env.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
			FieldSelector: fmt.Sprintf("involvedObject.kind=%s,involvedObject.name=%s", kind, name),
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.Reason == reason {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s Event on %s %s/%s within 20s (events: %v)", reason, kind, ns, name, evs.Items)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestControllerNodesAndNACKEvents serves a node Envoy (a Node object and a
// raw ADS client): opting a namespace in gives the node a filter chain for
// its pods, and a rejection of the route configuration becomes an Event on
// the VirtualServices behind it.
func TestControllerNodesAndNACKEvents(t *testing.T) {
	env, ctx, ns, b := bookinfoIn(t, 2*time.Minute)
	node := "node-" + ns
	if _, err := env.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	c := startController(t, env.Config, 20*time.Millisecond)

	// The controller pushes to Nodes before they connect.
	waitFor(t, 10*time.Second, "a snapshot for the Node", func() bool { return c.cache.Served(node) != nil })

	var reject sync.Map // type URL → message
	ads, err := xdstest.NewADSClient(ctx, c.addr, &corev3.Node{Id: node}, false, func(typeURL string, _ map[string]*anypb.Any) string {
		if v, ok := reject.Load(typeURL); ok {
			return v.(string)
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ads.Close()
	if err := ads.Wait(ctx, func(s xdstest.States) bool {
		return s[resourcev3.RouteType].ACKs > 0 && s[resourcev3.EndpointType].ACKs > 0
	}); err != nil {
		t.Fatal(err)
	}
	chains := func() int {
		cfg := c.cache.Config(node)
		if cfg == nil {
			return 0
		}
		r, err := cfg.Resources()
		if err != nil || len(r.Listeners) == 0 {
			return 0
		}
		return len(r.Listeners[0].GetFilterChains())
	}
	before := chains()

	// A reviews pod on this node in an opted-in namespace with sourceLabels
	// routing becomes a source class with its own chain.
	client := b.VirtualService(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: {{.Namespace}}}
spec:
  hosts: [ratings]
  http:
  - match:
    - sourceLabels: {app: reviews}
    route:
    - destination: {host: ratings, subset: v1}
    fault:
      abort: {httpStatus: 503, percentage: {value: 50}}
  - route:
    - destination: {host: ratings, subset: v1}
`)
	vsClient := env.Istio.NetworkingV1().VirtualServices(ns)
	cur, err := vsClient.Get(ctx, "ratings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec = *client.Spec.DeepCopy()
	if _, err := vsClient.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	nsObj, err := env.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsObj.Labels = map[string]string{"istio.io/dataplane-mode": "nodemesh"}
	if _, err := env.Client.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1"} {
		p, err := env.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Pods cannot move between nodes; recreate them on this one.
		if err := env.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		p.ResourceVersion, p.UID, p.Spec.NodeName = "", "", node
		if _, err := env.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "a filter chain for the reviews pods' source class", func() bool { return chains() > before })
	if err := ads.Wait(ctx, func(s xdstest.States) bool {
		return s[resourcev3.ListenerType].Version == c.cache.Served(node).GetVersion(resourcev3.ListenerType) &&
			s[resourcev3.RouteType].Version == c.cache.Served(node).GetVersion(resourcev3.RouteType)
	}); err != nil {
		t.Fatal(err)
	}

	// The node rejects the next route configuration (the 9080 one, by name,
	// as Envoy does).
	reject.Store(resourcev3.RouteType, "Error adding/updating route configuration(s) 9080: test rejection")
	cur, err = vsClient.Get(ctx, "ratings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Http = cur.Spec.Http[1:]
	if _, err := vsClient.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, ctx, env, ns, "VirtualService", "ratings", watch.ReasonRejected)
	if !strings.Contains(ev.Message, node) || !strings.Contains(ev.Message, "test rejection") {
		t.Errorf("rejection event message: %q", ev.Message)
	}
	if n := testutil.ToFloat64(c.metrics.NACKs.WithLabelValues("RouteConfiguration")); n != 1 {
		t.Errorf("NACKs counted: %v, want 1", n)
	}
}

// bookinfoIn deploys the bookinfo fixture in a namespace of its own of the
// shared API server, with a context for the test.
func bookinfoIn(t *testing.T, timeout time.Duration) (*kubetest.Env, context.Context, string, *xdstest.Bookinfo) {
	t.Helper()
	env := kubetest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	ns := env.Namespace(t, "bookinfo", nil)
	b := xdstest.NewBookinfo(t, ns, xdstest.HostAddress(t))
	deploy(t, env, b)
	return env, ctx, ns, b
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestControllerWithoutAPIServer cuts the controller off the API server: it
// reports not ready and keeps serving what it has; when the API server is
// back it is ready again and follows changes.
func TestControllerWithoutAPIServer(t *testing.T) {
	env, ctx, ns, b := bookinfoIn(t, 2*time.Minute)

	proxy := newTCPProxy(t, strings.TrimPrefix(env.Config.Host, "https://"))
	cfg := rest.CopyConfig(env.Config)
	cfg.Host = "https://" + proxy.addr
	// Bounded, but long enough to list a large shared API server under load.
	cfg.Timeout = 15 * time.Second
	c := startController(t, cfg, 20*time.Millisecond)
	client := xdstest.NewGRPCClient(t, c.addr, "grpc-"+ns)
	reviews := client.Dial(b.Target("reviews"))
	xdstest.WaitRouting(t, ctx, reviews, 20*time.Second, "jason routed to reviews-v2", xdstest.Only("reviews-v2"), "end-user", "jason")

	proxy.cut()
	waitFor(t, 10*time.Second, "not ready without the API server", func() bool { return c.Ready() != nil })
	if tally := xdstest.Calls(ctx, reviews, 20, "end-user", "jason"); tally["reviews-v2"] != 20 {
		t.Errorf("calls while the API server is unreachable: %v", tally)
	}
	// A change made meanwhile arrives once the API server is back.
	vsClient := env.Istio.NetworkingV1().VirtualServices(ns)
	vs, err := vsClient.Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vs.Spec = *b.VirtualService(t, xdstest.ReviewsAllV3).Spec.DeepCopy()
	if _, err := vsClient.Update(ctx, vs, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	proxy.restore()
	waitFor(t, 20*time.Second, "ready again", func() bool { return c.Ready() == nil })
	xdstest.WaitRouting(t, ctx, reviews, 30*time.Second, "the change made while cut off", xdstest.Only("reviews-v3"), "end-user", "jason")
}

// tcpProxy forwards a loopback port to an address; cut closes every
// connection and refuses new ones until restore.
type tcpProxy struct {
	addr   string
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{addr: l.Addr().String(), target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); p.cut() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				in.Close()
				continue
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				in.Close()
				continue
			}
			p.conns[in], p.conns[out] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return p
}

func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

func (p *tcpProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestControllerEndpointOnlyPush changes one EndpointSlice in the API
// server: only the endpoints of that Service are recomputed (no full
// translation) and a delta node is sent only the affected assignments.
func TestControllerEndpointOnlyPush(t *testing.T) {
	env, ctx, ns, _ := bookinfoIn(t, 2*time.Minute)
	node := "node-" + ns
	if _, err := env.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	c := startController(t, env.Config, 20*time.Millisecond)
	ads, err := xdstest.NewADSClient(ctx, c.addr, &corev3.Node{Id: node}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ads.Close()
	served := func(typ string) string { return c.cache.Served(node).GetVersion(typ) }
	synced := func(s xdstest.States) bool {
		for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
			if s[typ].ACKs == 0 || s[typ].Version != served(typ) {
				return false
			}
		}
		return true
	}
	if err := ads.Wait(ctx, synced); err != nil {
		t.Fatal(err)
	}
	// Other tests' namespaces may still be changing the cluster; wait for
	// a quiet moment so that what follows is this change alone.
	time.Sleep(300 * time.Millisecond)
	full := testutil.ToFloat64(c.metrics.Translations.WithLabelValues("full"))
	endpointsOnly := testutil.ToFloat64(c.metrics.Translations.WithLabelValues("endpoints"))
	before := map[string]xdstest.TypeState{}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		before[typ] = ads.State(typ)
	}

	if err := env.Client.DiscoveryV1().EndpointSlices(ns).Delete(ctx, "reviews-v3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("outbound|9080|v3|reviews.%s.svc.cluster.local", ns),
		fmt.Sprintf("outbound|9080||reviews.%s.svc.cluster.local", ns),
	}
	if err := ads.Wait(ctx, func(s xdstest.States) bool {
		eds := s[resourcev3.EndpointType]
		return eds.Responses > before[resourcev3.EndpointType].Responses && eds.Version == served(resourcev3.EndpointType)
	}); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(c.metrics.Translations.WithLabelValues("endpoints")) - endpointsOnly; n < 1 {
		t.Errorf("no endpoint-only translation")
	}
	if n := testutil.ToFloat64(c.metrics.Translations.WithLabelValues("full")) - full; n != 0 {
		t.Logf("%v full translations meanwhile (other tests share the API server)", n)
	}
	got := ads.State(resourcev3.EndpointType).LastResources
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("endpoints sent %v lack %s", got, w)
		}
	}
	for _, name := range got {
		// (Another package's tests may change their own namespaces in a
		// shared API server meanwhile.)
		if strings.Contains(name, "."+ns+".") && !strings.Contains(name, "|reviews.") {
			t.Errorf("endpoints of an unchanged Service sent: %s", name)
		}
	}
	time.Sleep(200 * time.Millisecond)
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType} {
		if n := ads.State(typ).Received - before[typ].Received; n != 0 {
			t.Errorf("%s: %d resources sent after an EndpointSlice change", typ, n)
		}
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
