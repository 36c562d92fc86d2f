package watch_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/xds/jwks"
	"github.com/nodemesh/nodemesh/xds/watch"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// TestRequestAuthenticationKeysFetched: a RequestAuthentication naming a
// jwksUri, on a pod of a node, through the real API server: the controller
// serves the pod's inbound chain with jwt_authn first holding istiod's
// rejecting key set (the keys are not fetched yet: deny more), its
// resolver fetches the key server's document, and the node is then served
// those keys; the key server rotating its keys reaches the node at the
// next refresh. The consumer is the raw ADS client.
func TestRequestAuthenticationKeysFetched(t *testing.T) {
	env := kubetest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)

	const k1 = `{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}`
	var mu sync.Mutex
	doc := k1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprint(w, doc)
	}))
	t.Cleanup(srv.Close)

	ns := env.Namespace(t, "jwks", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	node := "node-jwks-" + ns
	const webIP = "10.99.1.10"
	for _, o := range []any{
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, Labels: map[string]string{"app": "web"}},
			Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "web"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: webIP, PodIPs: []corev1.PodIP{{IP: webIP}}}},
	} {
		if _, err := env.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	ra := &securityv1.RequestAuthentication{ObjectMeta: metav1.ObjectMeta{Name: "web-jwt", Namespace: ns}}
	ra.Spec.Selector = nil
	ra.Spec.JwtRules = []*securityapi.JWTRule{{Issuer: "https://idp.example", JwksUri: srv.URL + "/keys"}}
	if _, err := env.Istio.SecurityV1().RequestAuthentications(ns).Create(ctx, ra, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	c := startControllerWith(t, env.Config, watch.Options{Debounce: 20 * time.Millisecond,
		// The test's key server is on loopback, which production refuses.
		JWKS: jwks.Options{AllowAddress: func(netip.Addr) bool { return true }, Refresh: 500 * time.Millisecond}})
	ads, err := xdstest.NewADSClient(ctx, c.addr, &corev3.Node{Id: node}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ads.Close() })
	keysServed := func(what, want string) {
		t.Helper()
		var got string
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		defer wcancel()
		if err := ads.Wait(wctx, func(s xdstest.States) bool {
			got = servedKeys(t, s, webIP, 8080)
			return got == want
		}); err != nil {
			t.Fatalf("%s: the node is served keys %q, want %q: %v", what, got, want, err)
		}
	}
	keysServed("the fetched keys", k1)

	k2 := strings.Replace(k1, `"k1"`, `"k2"`, 1)
	mu.Lock()
	doc = k2
	mu.Unlock()
	keysServed("the rotated keys", k2)
}

// servedKeys is the inline key set of the jwt_authn provider of the chain
// of addr:port on the node's inbound listener ("" when there is none).
func servedKeys(t *testing.T, s xdstest.States, addr string, port uint32) string {
	t.Helper()
	h, _ := servedInboundHCM(t, s, addr, port)
	for _, f := range h.GetHttpFilters() {
		if f.GetName() != "envoy.filters.http.jwt_authn" {
			continue
		}
		j := &jwtv3.JwtAuthentication{}
		if err := f.GetTypedConfig().UnmarshalTo(j); err != nil {
			t.Fatal(err)
		}
		for _, p := range j.GetProviders() {
			if k := p.GetLocalJwks().GetInlineString(); k != translate.RejectingJWKS {
				return k
			}
			return "rejecting"
		}
	}
	return ""
}
