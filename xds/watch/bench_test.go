package watch_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/internal/meshgen"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// benchNodes is how many node Envoys the benchmarks simulate.
const benchNodes = 100

// benchMesh is the controller benchmarks' cluster: n Services in 20 opted-in
// namespaces, each with a VirtualService and a DestinationRule (3 subsets)
// and 3 Pods (one per subset) spread over 100 nodes, with an EndpointSlice.
func benchMesh(n int) *meshgen.Mesh {
	return meshgen.New(meshgen.Options{
		Services: n, PodsPerService: 3, Nodes: benchNodes, Namespaces: 20, OptIn: true, EndpointSlices: true,
		Prefix: "mesh" + strconv.Itoa(n),
	})
}

// benchEnv is the benchmarks' API server: one of their own, or with
// NODEMESH_BENCH_SHARED=1 the shared one (make kube-up's), which keeps the
// mesh between runs — creating the 10,000-Service mesh takes about ten
// minutes. The controller watches every namespace: run one mesh size at a
// time against a shared API server.
func benchEnv(b *testing.B, key string) *kubetest.Env {
	if os.Getenv("NODEMESH_BENCH_SHARED") == "1" {
		return kubetest.Get(b)
	}
	return kubetest.Dedicated(b, key)
}

// populate creates a mesh in the benchmark's own API server, unless an
// earlier benchmark of this run did.
func populate(b *testing.B, env *kubetest.Env, mesh *meshgen.Mesh) {
	b.Helper()
	ctx := context.Background()
	last := mesh.VirtualServices[len(mesh.VirtualServices)-1]
	if _, err := env.Istio.NetworkingV1().VirtualServices(last.Namespace).Get(ctx, last.Name, metav1.GetOptions{}); err == nil {
		b.Logf("mesh of %d Services already in the API server", len(mesh.Services))
		return
	}
	start := time.Now()
	objs := []any{}
	for i := range benchNodes {
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-" + strconv.Itoa(i)}})
	}
	for _, ns := range mesh.Namespaces {
		objs = append(objs, ns)
	}
	create := func(objs []any) {
		work := make(chan any)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		for range 16 {
			wg.Go(func() {
				for o := range work {
					if _, err := env.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
						mu.Lock()
						if firstErr == nil {
							firstErr = fmt.Errorf("create %T: %w", o, err)
						}
						mu.Unlock()
					}
				}
			})
		}
		for _, o := range objs {
			work <- o
		}
		close(work)
		wg.Wait()
		if firstErr != nil {
			b.Fatal(firstErr)
		}
	}
	create(objs)
	objs = nil
	for _, o := range mesh.Objects() {
		switch v := o.(type) {
		case *corev1.Namespace:
			continue
		case *corev1.Service:
			v = v.DeepCopy()
			v.Spec.ClusterIP = "" // allocated by the API server
			o = v
		}
		objs = append(objs, o)
	}
	create(objs)
	b.Logf("created %d objects in %v", len(objs)+benchNodes+len(mesh.Namespaces), time.Since(start).Round(time.Second))
}

// connectNodes connects the simulated node Envoys (delta xDS, as the
// bootstrap configures them) and waits until each has every type.
func connectNodes(b *testing.B, ctx context.Context, addr string) []*xdstest.ADSClient {
	b.Helper()
	return connectNodesWith(b, ctx, func(i int) (*xdstest.ADSClient, error) {
		return xdstest.NewLightADSClient(ctx, addr, &corev3.Node{Id: "node-" + strconv.Itoa(i)}, true)
	})
}

// benchClients is how many simulated nodes connect.
func benchClients() int {
	if v, err := strconv.Atoi(os.Getenv("NODEMESH_BENCH_CLIENTS")); err == nil && v > 0 && v < benchNodes {
		return v // fewer simulated nodes connect (the memory benchmark at 10,000 Services)
	}
	return benchNodes
}

// connectNodesWith connects node-0… with dial and waits until each has
// accepted everything.
func connectNodesWith(b *testing.B, ctx context.Context, dial func(i int) (*xdstest.ADSClient, error)) []*xdstest.ADSClient {
	b.Helper()
	clients := make([]*xdstest.ADSClient, benchClients())
	for i := range clients {
		c, err := dial(i)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		clients[i] = c
	}
	for _, c := range clients {
		if err := c.Wait(ctx, xdstest.AllACKed); err != nil {
			b.Fatal(err)
		}
	}
	return clients
}

// converge waits until every client has accepted a change of typ made at
// start and returns each client's delay.
func converge(b *testing.B, ctx context.Context, clients []*xdstest.ADSClient, typ string, before []int, start time.Time) []time.Duration {
	b.Helper()
	out := make([]time.Duration, len(clients))
	for i, c := range clients {
		if err := c.Wait(ctx, func(s xdstest.States) bool { return s[typ].Changes > before[i] }); err != nil {
			b.Fatalf("node %d did not converge: %v", i, err)
		}
		out[i] = c.State(typ).ChangedAt.Sub(start)
	}
	return out
}

func changes(clients []*xdstest.ADSClient, typ string) []int {
	out := make([]int, len(clients))
	for i, c := range clients {
		out[i] = c.State(typ).Changes
	}
	return out
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func reportLatency(b *testing.B, samples []time.Duration) {
	b.ReportMetric(float64(percentile(samples, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(samples, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(slices.Max(samples).Microseconds())/1000, "max-ms")
}

// servedMesh is the 1,000-Service mesh in the benchmarks' API server, a
// controller (default debounce) serving it and the simulated nodes
// connected and synced.
func servedMesh(b *testing.B) (context.Context, *kubetest.Env, *meshgen.Mesh, []*xdstest.ADSClient) {
	b.Helper()
	env := benchEnv(b, "mesh1000")
	mesh := benchMesh(1000)
	populate(b, env, mesh)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	b.Cleanup(cancel)
	c := startController(b, env.Config, 0)
	clients := connectNodes(b, ctx, c.addr)
	time.Sleep(time.Second) // let the initial pushes settle
	return ctx, env, mesh, clients
}

// BenchmarkConvergence: 1,000 Services with VirtualServices and
// DestinationRules, 100 node Envoys connected over ADS; each iteration
// updates one VirtualService in the API server and waits until all 100
// nodes have accepted the new route configuration. p50/p99 are over every
// node of every iteration, from the update call to the node's ACK (with the
// controller's default 100 ms debounce).
func BenchmarkConvergence(b *testing.B) {
	ctx, env, mesh, clients := servedMesh(b)

	var samples []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		vs := mesh.VirtualServices[i%len(mesh.VirtualServices)]
		weight := int32(70 + 10*(i/len(mesh.VirtualServices)%2)) // alternate 70/80 on reuse
		if i%2 == 0 {
			weight = 60
		}
		cur, err := env.Istio.NetworkingV1().VirtualServices(vs.Namespace).Get(ctx, vs.Name, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if cur.Spec.Http[1].Route[0].Weight == weight {
			weight++
		}
		cur.Spec.Http[1].Route[0].Weight, cur.Spec.Http[1].Route[1].Weight = weight, 100-weight
		before := changes(clients, resourcev3.RouteType)
		start := time.Now()
		if _, err := env.Istio.NetworkingV1().VirtualServices(vs.Namespace).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, converge(b, ctx, clients, resourcev3.RouteType, before, start)...)
	}
	b.StopTimer()
	reportLatency(b, samples)
}

// BenchmarkEndpointPush: one EndpointSlice changes (an endpoint becomes
// unready, then ready) with 1,000 Services and 100 delta-xDS nodes: only the
// changed Service's assignments are recomputed and sent. Reports the
// resources each node receives per change and the time until all 100 have
// accepted it.
func BenchmarkEndpointPush(b *testing.B) {
	ctx, env, mesh, clients := servedMesh(b)

	var samples []time.Duration
	received, other := 0, 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		es := mesh.EndpointSlices[i%len(mesh.EndpointSlices)]
		cur, err := env.Client.DiscoveryV1().EndpointSlices(es.Namespace).Get(ctx, es.Name, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		ready := cur.Endpoints[0].Conditions.Ready == nil || *cur.Endpoints[0].Conditions.Ready
		flipped := !ready
		cur.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: &flipped}
		before := changes(clients, resourcev3.EndpointType)
		recvBefore := make([][4]int, len(clients))
		types := []string{resourcev3.EndpointType, resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType}
		for j, cl := range clients {
			for k, t := range types {
				recvBefore[j][k] = cl.State(t).Received
			}
		}
		start := time.Now()
		if _, err := env.Client.DiscoveryV1().EndpointSlices(es.Namespace).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, converge(b, ctx, clients, resourcev3.EndpointType, before, start)...)
		for j, cl := range clients {
			received += cl.State(resourcev3.EndpointType).Received - recvBefore[j][0]
			for k, t := range types[1:] {
				other += cl.State(t).Received - recvBefore[j][k+1]
			}
		}
	}
	b.StopTimer()
	reportLatency(b, samples)
	b.ReportMetric(float64(received)/float64(b.N*len(clients)), "eds-resources/node")
	b.ReportMetric(float64(other)/float64(b.N*len(clients)), "other-resources/node")
}

// BenchmarkControllerMemory runs the nodemesh-controller binary against a
// mesh of 1,000 or 10,000 Services with 100 nodes connected and reports its
// resident memory once every node has its configuration and it has settled
// (rss-MB; rss-anon-MB without the binary's own pages) and its peak (peak-MB, VmHWM: the initial translation included), and its live
// heap (live-MB).
func BenchmarkControllerMemory(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run("services="+strconv.Itoa(n), func(b *testing.B) {
			if n > 1000 && os.Getenv("NODEMESH_BENCH_10K") != "1" {
				// 100 simulated nodes of a 10,000-Service mesh in this one
				// process took over 11 GB, next to a controller of over
				// 4 GB (docs/benchmarks.md): only on request.
				b.Skip("set NODEMESH_BENCH_10K=1 (needs more than 16 GB of memory)")
			}
			env := benchEnv(b, "mesh"+strconv.Itoa(n))
			populate(b, env, benchMesh(n))
			bin := filepath.Join(b.TempDir(), "nodemesh-controller")
			build := exec.Command("go", "build", "-o", bin, "../../cmd/nodemesh-controller")
			build.Stderr = os.Stderr
			if err := build.Run(); err != nil {
				b.Fatal(err)
			}
			for i := 0; i < b.N; i++ {
				m := runControllerProcess(b, env, bin, n)
				b.ReportMetric(m.rss, "rss-MB")
				b.ReportMetric(m.anon, "rss-anon-MB")
				b.ReportMetric(m.peak, "peak-MB")
				b.ReportMetric(m.live, "live-MB")
			}
		})
	}
}

// memFigures: anon is the part of rss that is not file pages (the
// binary's text and data mapped from disk).
type memFigures struct{ rss, anon, peak, live float64 }

// runControllerProcess runs the controller, connects the nodes and measures
// the process once they are served: resident memory now and at its peak,
// then the live Go heap (go_memstats_heap_alloc_bytes right after a forced
// collection). The heap profile of that collection is left in
// _output/controller-heap-<services>.pprof for go tool pprof.
func runControllerProcess(b *testing.B, env *kubetest.Env, bin string, services int) memFigures {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	xdsPort, monPort := freePort(b), freePort(b)
	mon := fmt.Sprintf("http://127.0.0.1:%d", monPort)
	// The controller's namespace: its CA, and the node proxies' accounts.
	ns := env.Namespace(b, "nodemesh-bench", nil)
	cmd := exec.CommandContext(ctx, bin, "run", "--kubeconfig", env.Kubeconfig, "--log-level", "warn", "--profiling",
		"--namespace", ns, "--xds-address", fmt.Sprintf("127.0.0.1:%d", xdsPort), "--monitoring-address", fmt.Sprintf("127.0.0.1:%d", monPort))
	cmd.Stderr = os.Stderr
	if l := os.Getenv("NODEMESH_BENCH_GOMEMLIMIT"); l != "" {
		// The controller under a soft memory limit, as the chart runs it.
		cmd.Env = append(os.Environ(), "GOMEMLIMIT="+l)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	for {
		resp, err := http.Get(mon + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if ctx.Err() != nil {
			b.Fatal("controller never ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The simulated node Envoys authenticate as real ones do: TLS verified
	// with the CA the controller published, each with a token bound to a
	// node proxy pod on its node.
	access := nodeProxyAccess(b, ctx, env, ns, benchClients())
	connectNodesWith(b, ctx, func(i int) (*xdstest.ADSClient, error) {
		conn, err := xdstest.Dial(fmt.Sprintf("127.0.0.1:%d", xdsPort),
			grpc.WithTransportCredentials(credentials.NewTLS(access.tls)), grpc.WithPerRPCCredentials(xdstest.Bearer(access.tokens[i])))
		if err != nil {
			return nil, err
		}
		return xdstest.NewLightADSClientConn(ctx, conn, &corev3.Node{Id: "node-" + strconv.Itoa(i)}, true), nil
	})
	// Resident memory once it has settled: the runtime returns what the
	// initial sync used to the OS gradually (under a soft limit, within
	// seconds), so one early sample says more about the moment than about
	// the controller. Settled: no sample lower for 5 s (at most 60 s).
	rss, start := procStatusMB(b, cmd.Process.Pid, "VmRSS"), time.Now()
	for low, since := rss, start; time.Since(since) < 5*time.Second && time.Since(start) < time.Minute; {
		time.Sleep(time.Second)
		if rss = procStatusMB(b, cmd.Process.Pid, "VmRSS"); rss < low-1 {
			low, since = rss, time.Now()
		}
		if ctx.Err() != nil {
			break
		}
	}
	m := memFigures{rss: rss, anon: procStatusMB(b, cmd.Process.Pid, "RssAnon"), peak: procStatusMB(b, cmd.Process.Pid, "VmHWM")}
	// A heap profile taken after a collection (left for go tool pprof),
	// then the heap that collection left: what is live.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, mon+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set(api.DebugTokenHeader, access.debugToken)
	prof, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	if prof.StatusCode != http.StatusOK {
		// The debug endpoints are authorized (the token above): a refusal
		// here is a defect.
		b.Fatalf("heap profile: %s", prof.Status)
	} else {
		out := filepath.Join("..", "..", "_output")
		_ = os.MkdirAll(out, 0o755)
		if f, err := os.Create(filepath.Join(out, fmt.Sprintf("controller-heap-%d.pprof", services))); err == nil {
			_, _ = io.Copy(f, prof.Body)
			f.Close()
		}
		prof.Body.Close()
	}
	resp, err := http.Get(mon + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "go_memstats_heap_alloc_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			m.live = f / (1 << 20)
		}
	}
	return m
}

// controllerAccess is what clients of a controller process present: the
// TLS configuration that verifies it with the CA it published, a token
// bound to a node proxy pod per node, and a debug token.
type controllerAccess struct {
	tls        *tls.Config
	tokens     []string
	debugToken string
}

// nodeProxyAccess creates, in the controller's namespace ns, what the chart
// and the kubelet give node Envoys and debug clients: ServiceAccount
// nodemesh-envoy with a pod on each of the first n nodes and a projected
// token (audience nodemesh-xds) bound to each; ServiceAccount
// nodemesh-debug allowed to get services/proxy on the controller, and a
// token of it (audience nodemesh-debug).
func nodeProxyAccess(b *testing.B, ctx context.Context, env *kubetest.Env, ns string, n int) controllerAccess {
	b.Helper()
	core := env.Client.CoreV1()
	for _, sa := range []string{api.NodeProxyServiceAccount, api.DebugServiceAccount} {
		if _, err := core.ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	rbac := env.Client.RbacV1()
	if _, err := rbac.Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "bench-debug"}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"services/proxy"}, ResourceNames: []string{api.ControllerService}, Verbs: []string{"get"},
	}}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := rbac.RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-debug"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "bench-debug"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: api.DebugServiceAccount, Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	token := func(sa, audience string, pod *corev1.Pod) string {
		req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](3600)}}
		if pod != nil {
			req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
		}
		tr, err := core.ServiceAccounts(ns).CreateToken(ctx, sa, req, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return tr.Status.Token
	}
	a := controllerAccess{debugToken: token(api.DebugServiceAccount, api.DebugAudience, nil)}
	for i := range n {
		pod, err := core.Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "nodemesh-envoy-" + strconv.Itoa(i)},
			Spec: corev1.PodSpec{NodeName: "node-" + strconv.Itoa(i), ServiceAccountName: api.NodeProxyServiceAccount,
				AutomountServiceAccountToken: ptr.To(false), Containers: []corev1.Container{{Name: "envoy", Image: "envoyproxy/envoy"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		a.tokens = append(a.tokens, token(api.NodeProxyServiceAccount, api.XDSAudience, pod))
	}
	var bundle string
	for bundle == "" {
		if cm, err := core.ConfigMaps(ns).Get(ctx, api.CABundleConfigMap, metav1.GetOptions{}); err == nil {
			bundle = cm.Data[api.CABundleKey]
		}
		if bundle == "" {
			if ctx.Err() != nil {
				b.Fatal("the controller never published its CA bundle")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(bundle)) {
		b.Fatal("the published CA bundle holds no certificate")
	}
	a.tls = &tls.Config{RootCAs: pool, ServerName: api.ControllerService + "." + ns + ".svc", MinVersion: tls.VersionTLS12}
	return a
}

func procStatusMB(b *testing.B, pid int, field string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatalf("%s not in /proc/%d/status", field, pid)
	return 0
}
