package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/install"
	"github.com/nodemesh/nodemesh/internal/clibase"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func freePort(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// applyChartAccess creates what the chart gives the controller and its
// clients in namespace ns — ServiceAccounts, Roles and bindings, the empty
// CA Secret and bundle ConfigMap, and the controller's ClusterRole (renamed
// for ns: cluster-scoped names are shared by every test) — from the
// chart's own rendering, so the test runs with exactly the chart's
// permissions.
func applyChartAccess(t *testing.T, env *kubetest.Env, ns string) {
	t.Helper()
	c, err := install.Chart()
	if err != nil {
		t.Fatal(err)
	}
	out, err := install.Render(c, install.RenderOptions{Namespace: ns, WithoutCRDs: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := utilyaml.NewYAMLReader(bufioReader(out))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(doc, []byte("kind:")) || bytes.Contains(doc, []byte("apiVersion: nodemesh.io/")) {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		core, rbac := env.Client.CoreV1(), env.Client.RbacV1()
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			_, err = core.ServiceAccounts(ns).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Secret:
			_, err = core.Secrets(ns).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ConfigMap:
			if o.Name != api.CABundleConfigMap {
				continue
			}
			_, err = core.ConfigMaps(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = rbac.Roles(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = rbac.RoleBindings(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			if o.Name != api.ControllerName {
				continue
			}
			o.Name += "-" + ns
			_, err = rbac.ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
			t.Cleanup(func() { _ = rbac.ClusterRoles().Delete(context.Background(), o.Name, metav1.DeleteOptions{}) })
		case *rbacv1.ClusterRoleBinding:
			if o.Name != api.ControllerName {
				continue
			}
			o.Name += "-" + ns
			o.RoleRef.Name += "-" + ns
			_, err = rbac.ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
			t.Cleanup(func() { _ = rbac.ClusterRoleBindings().Delete(context.Background(), o.Name, metav1.DeleteOptions{}) })
		default:
			continue
		}
		if err != nil {
			t.Fatalf("create %T: %v", obj, err)
		}
	}
}

// kubeconfigAs writes a kubeconfig for the API server of env that
// authenticates as ServiceAccount ns/sa (a token of the API's audience).
func kubeconfigAs(t *testing.T, env *kubetest.Env, ns, sa string) string {
	t.Helper()
	tr, err := env.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		ai.ClientCertificate, ai.ClientKey, ai.ClientCertificateData, ai.ClientKeyData = "", "", nil, nil
		ai.Token = tr.Status.Token
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestControllerCommand runs 'nodemesh-controller run' as the chart's
// controller ServiceAccount, with the chart's RBAC, against the API server,
// and uses it as its clients do:
//   - 'nodemesh proxy-config' through the API server's service proxy (a
//     debug token of the chart's nodemesh-debug account, which the
//     controller checks with a SubjectAccessReview) and directly with
//     --controller; a token of an account without the permission gets 403,
//     a request without a token 401 — through the service proxy too;
//   - a node proxy's projected token over TLS, verified with the CA bundle
//     the controller published, for its node — and not for another;
//
// then stops the controller as SIGTERM does.
func TestControllerCommand(t *testing.T) {
	env := kubetest.Get(t)
	host := xdstest.HostAddress(t)(0)
	ns := env.Namespace(t, "nodemesh-system", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := "node-" + ns
	if _, err := env.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	applyChartAccess(t, env, ns)

	monPort, xdsPort := freePort(t, host), freePort(t, "127.0.0.1")
	o := &controllerOptions{
		kube: KubeFlags{Kubeconfig: kubeconfigAs(t, env, ns, api.ControllerName)}, xdsAddress: net.JoinHostPort("127.0.0.1", strconv.Itoa(xdsPort)),
		monitoringAddress: net.JoinHostPort(host, strconv.Itoa(monPort)),
		debounce:          20 * time.Millisecond, maxDebounce: time.Second, clusterDomain: "cluster.local", rootNamespace: "istio-system",
		log: clibase.LogFlags{Level: "warn", Format: "text"}, shutdownGrace: 2 * time.Second,
		namespace: ns, service: api.ControllerService, nodeProxyAccounts: []string{api.NodeProxyServiceAccount},
		caSecret: api.CASecret, caBundle: api.CABundleConfigMap, maxConnectionAge: 30 * time.Minute,
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	var logs xdstest.SyncBuffer
	go func() { done <- runController(runCtx, o, IO{Out: &logs, ErrOut: &logs}) }()
	defer func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controller exited with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("controller did not stop within 10s of its context ending")
		}
	}()
	base := fmt.Sprintf("http://%s", o.monitoringAddress)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("controller exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller not ready in 30s (%v)\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The controller's Service, backed by this process standing in for the
	// controller's pod. The API server's proxy refuses loopback (and
	// link-local) endpoints — they would reach the API server's own host
	// services —, so the monitoring port listens on a non-loopback address
	// of this host.
	port := int32(monPort)
	if _, err := env.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nodemesh-controller-0", Namespace: ns, Labels: map[string]string{"app": "nodemesh-controller"}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "controller", Image: "nodemesh/controller"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: host, PodIPs: []corev1.PodIP{{IP: host}}},
	}); err != nil {
		t.Fatal(err)
	}
	podRef := &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "nodemesh-controller-0"}
	if _, err := env.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "nodemesh-controller", Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http-monitoring", Port: 15014}}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().Endpoints(ns).Create(ctx, &corev1.Endpoints{ //nolint:staticcheck // the API server's service proxy resolves Endpoints
		ObjectMeta: metav1.ObjectMeta{Name: "nodemesh-controller", Namespace: ns},
		Subsets:    []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: host, TargetRef: podRef}}, Ports: []corev1.EndpointPort{{Name: "http-monitoring", Port: port}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	name := "http-monitoring"
	if _, err := env.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "nodemesh-controller", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "nodemesh-controller"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, TargetRef: podRef}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
	}); err != nil {
		t.Fatal(err)
	}
	var code int
	var out, errOut string
	deadline = time.Now().Add(20 * time.Second)
	for {
		code, out, errOut = run(t, "", "proxy-config", "listeners", "--node", node, "--kubeconfig", env.Kubeconfig, "--controller-namespace", ns)
		if code == ExitOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != ExitOK || !strings.Contains(out, "virtualOutbound") {
		t.Fatalf("proxy-config through the API server: exit %d\n%s\n%s\ncontroller logs:\n%s", code, out, errOut, logs.String())
	}
	code, _, errOut = run(t, "", "proxy-config", "--node", "no-such-node", "--kubeconfig", env.Kubeconfig, "--controller-namespace", ns)
	if code != ExitFindings || !strings.Contains(errOut, "no-such-node") {
		t.Errorf("unknown node through the API server: exit %d, %s", code, errOut)
	}
	// Directly, with a token requested the same way.
	code, out, errOut = run(t, "", "proxy-config", "listeners", "--node", node, "--kubeconfig", env.Kubeconfig, "--controller-namespace", ns, "--controller", base)
	if code != ExitOK || !strings.Contains(out, "virtualOutbound") {
		t.Errorf("proxy-config --controller: exit %d\n%s\n%s", code, out, errOut)
	}
	// An account that may not proxy to the controller: 403, both ways.
	for _, direct := range []bool{false, true} {
		args := []string{"proxy-config", "--node", node, "--kubeconfig", env.Kubeconfig, "--controller-namespace", ns, "--debug-service-account", api.NodeProxyServiceAccount}
		if direct {
			args = append(args, "--controller", base)
		}
		if code, _, errOut := run(t, "", args...); code != ExitFindings || !strings.Contains(errOut, "403") {
			t.Errorf("token of an account without get services/proxy (direct %v): exit %d, %s", direct, code, errOut)
		}
	}
	// No token through the service proxy: the controller's 401 comes back.
	body, err := env.Client.CoreV1().RESTClient().Get().Namespace(ns).Resource("services").Name("http:nodemesh-controller:15014").
		SubResource("proxy").Suffix("debug/config_dump").Param("node", node).DoRaw(ctx)
	var st apierrors.APIStatus
	if !errors.As(err, &st) || st.Status().Code != http.StatusUnauthorized || strings.Contains(string(body), "virtualOutbound") {
		t.Errorf("no token through the service proxy: %v %.200s", err, body)
	}

	// A node proxy of this node, over TLS with the published CA.
	envoyPod, err := env.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nodemesh-envoy-x", Namespace: ns},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: api.NodeProxyServiceAccount, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "envoy", Image: "envoyproxy/envoy"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := envoyPod.(*corev1.Pod)
	tr, err := env.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, api.NodeProxyServiceAccount, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{api.XDSAudience}, ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, api.CABundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(cm.Data[api.CABundleKey])) {
		t.Fatalf("the controller published no CA: %v", cm.Data)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: api.ControllerService + "." + ns + ".svc", MinVersion: tls.VersionTLS12})),
		grpc.WithPerRPCCredentials(xdstest.Bearer(tr.Status.Token)),
	}
	for nodeID, want := range map[string]codes.Code{node: codes.OK, "node-elsewhere": codes.PermissionDenied} {
		s, err := xdstest.OpenRawADS(ctx, o.xdsAddress, true, dial...)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.RequestClusters(xdstest.EnvoyNode(nodeID))
		_, err = s.Next()
		s.Close()
		if status.Code(err) != want {
			t.Errorf("node proxy of %s as %s: %v, want %v\n%s", node, nodeID, err, want, logs.String())
		}
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
