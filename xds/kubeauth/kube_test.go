package kubeauth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/kubeauth"
	"github.com/nodemesh/nodemesh/xds/servingcert"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// countingReviews counts the TokenReviews that reach the API server.
type countingReviews struct {
	kubeauth.TokenReviews
	n atomic.Int32
}

func (c *countingReviews) Create(ctx context.Context, tr *authenticationv1.TokenReview, o metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	c.n.Add(1)
	return c.TokenReviews.Create(ctx, tr, o)
}

// cluster is a controller's namespace with node proxies on two nodes and a
// workload namespace with an application pod, in a real API server; pods
// have the status a kubelet would give them.
type cluster struct {
	env              *kubetest.Env
	ns, wns          string
	nodeA, nodeB     string
	appIP            string
	pods             map[string]*corev1.Pod // by namespace/name
	clusterDomain    string
	controllerDNSNam string
}

const appPod = "app-0"

func newCluster(t *testing.T) *cluster {
	t.Helper()
	env := kubetest.Get(t)
	ctx := context.Background()
	c := &cluster{env: env, ns: env.Namespace(t, "nodemesh-system", nil), wns: env.Namespace(t, "shop", nil), pods: map[string]*corev1.Pod{},
		appIP: "10.1.2.3", clusterDomain: "cluster.local"}
	c.nodeA, c.nodeB = "node-a-"+c.ns, "node-b-"+c.ns
	c.controllerDNSNam = api.ControllerService + "." + c.ns + ".svc"
	for _, n := range []string{c.nodeA, c.nodeB} {
		if _, err := env.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), n, metav1.DeleteOptions{}) })
	}
	c.serviceAccount(t, c.ns, api.NodeProxyServiceAccount)
	c.serviceAccount(t, c.wns, "app")
	// An account named like the node proxies', in another namespace.
	c.serviceAccount(t, c.wns, api.NodeProxyServiceAccount)
	c.pod(t, c.ns, "envoy-a", api.NodeProxyServiceAccount, c.nodeA, "192.168.0.10")
	c.pod(t, c.ns, "envoy-b", api.NodeProxyServiceAccount, c.nodeB, "192.168.0.11")
	c.pod(t, c.wns, appPod, "app", c.nodeA, c.appIP)
	c.pod(t, c.wns, "fake-envoy", api.NodeProxyServiceAccount, c.nodeA, "10.1.2.4")
	return c
}

func (c *cluster) serviceAccount(t *testing.T, ns, name string) {
	t.Helper()
	if _, err := c.env.Client.CoreV1().ServiceAccounts(ns).Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) pod(t *testing.T, ns, name, sa, node, ip string) *corev1.Pod {
	t.Helper()
	obj, err := c.env.Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: node, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "c", Image: "example.com/c"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := obj.(*corev1.Pod)
	c.pods[ns+"/"+name] = p
	return p
}

// token requests a token of the pod's ServiceAccount bound to it, as the
// kubelet does for a projected volume (audience "" is the API server's).
func (c *cluster) token(t *testing.T, ns, pod, audience string) string {
	t.Helper()
	p := c.pods[ns+"/"+pod]
	return c.tokenFor(t, ns, p.Spec.ServiceAccountName, audience, &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID})
}

func (c *cluster) tokenFor(t *testing.T, ns, sa, audience string, bound *authenticationv1.BoundObjectReference) string {
	t.Helper()
	spec := authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600), BoundObjectRef: bound}
	if audience != "" {
		spec.Audiences = []string{audience}
	}
	tr, err := c.env.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// controller is an xDS server authenticating as the controller does, with
// its CA in the cluster and its bundle published; node A and node B are
// served a cluster of their own, proxyless clients bookinfo.
type controller struct {
	addr    string
	cache   *xds.Cache
	reviews *countingReviews
	podGets *atomic.Int32
	metrics *xds.AuthMetrics
	caPool  *x509.CertPool
	caPEM   []byte
	dnsName string
}

func (c *cluster) controller(t *testing.T, provider func(*corev3.Node) *xds.Config) *controller {
	t.Helper()
	ctx := context.Background()
	// The chart creates the CA Secret empty; the controller fills it.
	if _, err := c.env.Client.CoreV1().Secrets(c.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: api.CASecret}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ca, err := kubeauth.LoadCA(ctx, c.env.Client, c.ns, api.CASecret)
	if err != nil {
		t.Fatal(err)
	}
	// The Service's name, and for grpc-go's xDS client (which verifies
	// the server_uri's host) the loopback address the test serves on.
	is, err := servingcert.NewIssuer(ca, []string{c.controllerDNSNam}, []net.IP{net.IPv4(127, 0, 0, 1)}, servingcert.LeafValidity)
	if err != nil {
		t.Fatal(err)
	}
	pub := &kubeauth.Publisher{Client: c.env.Client, Namespace: c.ns, Name: api.CABundleConfigMap, Source: is}
	if err := pub.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	// The authenticator's client counts its pod lookups at the transport.
	podGets := &atomic.Int32{}
	cfg := rest.CopyConfig(c.env.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/pods/") {
				podGets.Add(1)
			}
			return rt.RoundTrip(r)
		})
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reviews := &countingReviews{TokenReviews: client.AuthenticationV1().TokenReviews()}
	auth, err := kubeauth.NewXDS(kubeauth.XDSOptions{Client: client, Reviews: reviews, Namespace: c.ns, ClusterDomain: c.clusterDomain})
	if err != nil {
		t.Fatal(err)
	}
	cache := xds.NewCache(nil, nil)
	cache.Provider = provider
	for _, n := range []string{c.nodeA, c.nodeB} {
		cl := &clusterv3.Cluster{Name: "only-" + n, ConnectTimeout: durationpb.New(time.Second), ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}
		if err := cache.Push(xds.NewConfig(n, xds.EnvoyNode, translate.Resources{Clusters: []*clusterv3.Cluster{cl}}), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	m := xds.NewAuthMetrics(nil)
	addr, stop := xdstest.ServeWith(t, cache, "127.0.0.1:0", xds.ServerOptions{Auth: auth, TLS: servingcert.ServerTLS(is), Metrics: m})
	t.Cleanup(stop)
	// Clients trust what the ConfigMap publishes (what the node Envoys
	// mount), not what the test holds.
	cm, err := c.env.Client.CoreV1().ConfigMaps(c.ns).Get(ctx, api.CABundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data[api.CABundleKey])) {
		t.Fatalf("ConfigMap %s holds no CA: %v", api.CABundleConfigMap, cm.Data)
	}
	return &controller{addr: addr, cache: cache, reviews: reviews, podGets: podGets, metrics: m, caPool: pool, caPEM: []byte(cm.Data[api.CABundleKey]), dnsName: c.controllerDNSNam}
}

// dial is an Envoy's connection: TLS verifying the controller's Service
// name with the published CA, and token as the bearer token ("" none).
func (ctl *controller) dial(token string) []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ctl.caPool, ServerName: ctl.dnsName, MinVersion: tls.VersionTLS12}))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(xdstest.Bearer(token)))
	}
	return opts
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
