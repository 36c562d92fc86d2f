package watch_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	securityapi "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/xds/watch"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// servedMTLSChains describes the node's served inbound chains for
// addr:port, sorted: "mtls=<certificate>" for a chain terminating TLS,
// "tls-passthrough" for TLS handed to the pod, "plain" otherwise; "none" when the node has no inbound listener.
func servedMTLSChains(t *testing.T, s xdstest.States, addr string, port uint32) string {
	t.Helper()
	a, ok := s[resourcev3.ListenerType].Resources[ir.InboundListenerName]
	if !ok {
		return "none"
	}
	l := &listenerv3.Listener{}
	if err := a.UnmarshalTo(l); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fc := range l.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		if m.GetDestinationPort().GetValue() != port || len(m.GetPrefixRanges()) == 0 || m.GetPrefixRanges()[0].GetAddressPrefix() != addr {
			continue
		}
		if fc.GetTransportSocket() == nil {
			if m.GetTransportProtocol() == "tls" {
				out = append(out, "tls-passthrough") // the pod's own TLS
			} else {
				out = append(out, "plain")
			}
			continue
		}
		ctx := &tlsv3.DownstreamTlsContext{}
		if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
			t.Fatal(err)
		}
		out = append(out, "mtls="+ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetName())
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// TestInboundMTLSServedPerNode: with a real API server and --istio-mtls, a
// migrated pod behind a Service gets mTLS termination on its node's
// inbound listener only once a DestinationRule ISTIO_MUTUAL names the
// Service: the chain presents the pod's own identity; the PeerAuthentication
// (there before the controller starts: part of its initial sync) makes it
// STRICT — the mTLS chain only —, changed to PERMISSIVE it adds the
// plaintext chains, back to STRICT it removes them; the other node never has a listener; the rule removed
// removes it.
func TestInboundMTLSServedPerNode(t *testing.T) {
	env := kubetest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	ns := env.Namespace(t, "inmtls", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	nodeA, nodeB := "node-a-"+ns, "node-b-"+ns
	const dbIP = "10.99.1.10"
	objs := []any{
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeA}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeB}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "db"},
			Ports:    []corev1.ServicePort{{Name: "tcp-db", Port: 5432, TargetPort: intstr.FromInt32(5432)}},
		}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-1", Namespace: ns, Labels: map[string]string{"app": "db"}},
			Spec:   corev1.PodSpec{NodeName: nodeA, Containers: []corev1.Container{{Name: "app", Image: "db"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: dbIP, PodIPs: []corev1.PodIP{{IP: dbIP}}}},
	}
	for _, o := range objs {
		if _, err := env.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	t.Cleanup(func() {
		for _, n := range []string{nodeA, nodeB} {
			_ = env.Client.CoreV1().Nodes().Delete(context.Background(), n, metav1.DeleteOptions{})
		}
	})
	pas := env.Istio.SecurityV1().PeerAuthentications(ns)
	strict := &securityv1.PeerAuthentication{}
	if err := yaml.Unmarshal([]byte(`{metadata: {name: default}, spec: {mtls: {mode: STRICT}}}`), strict); err != nil {
		t.Fatal(err)
	}
	if _, err := pas.Create(ctx, strict, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := startControllerWith(t, env.Config, watch.Options{Debounce: 20 * time.Millisecond, Istio: translate.IstioOptions{IstioMTLS: true}})
	clients := map[string]*xdstest.ADSClient{}
	for _, n := range []string{nodeA, nodeB} {
		ads, err := xdstest.NewADSClient(ctx, c.addr, &corev3.Node{Id: n}, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ads.Close() })
		clients[n] = ads
	}
	wait := func(what, wantA string) {
		t.Helper()
		var gotA, gotB string
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		defer wcancel()
		err := clients[nodeA].Wait(wctx, func(s xdstest.States) bool {
			gotA = servedMTLSChains(t, s, dbIP, 5432)
			return gotA == wantA
		})
		if err == nil {
			err = clients[nodeB].Wait(wctx, func(s xdstest.States) bool {
				gotB = servedMTLSChains(t, s, dbIP, 5432)
				return gotB == "none"
			})
		}
		if err != nil {
			t.Fatalf("%s: node A %q (want %q), node B %q (want none): %v", what, gotA, wantA, gotB, err)
		}
	}
	wait("no DestinationRule", "none")

	drs := env.Istio.NetworkingV1().DestinationRules(ns)
	dr := &networkingv1.DestinationRule{}
	if err := yaml.Unmarshal([]byte(`{metadata: {name: db}, spec: {host: db, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}}`), dr); err != nil {
		t.Fatal(err)
	}
	if _, err := drs.Create(ctx, dr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	id := "spiffe://cluster.local/ns/" + ns + "/sa/default"
	wait("DestinationRule ISTIO_MUTUAL, STRICT", "mtls="+id)

	setMode := func(m securityapi.PeerAuthentication_MutualTLS_Mode) {
		t.Helper()
		cur, err := pas.Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.Mtls.Mode = m
		if _, err := pas.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Twice: a full translation of the controller's start-up (another
	// kind's watch starting) could follow the first update by chance; the
	// second can only be seen through the update's own translation.
	setMode(securityapi.PeerAuthentication_MutualTLS_PERMISSIVE)
	wait("PERMISSIVE", "mtls="+id+" plain tls-passthrough")
	setMode(securityapi.PeerAuthentication_MutualTLS_STRICT)
	wait("STRICT again", "mtls="+id)

	if err := drs.Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("the DestinationRule removed", "none")
}
