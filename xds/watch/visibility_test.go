package watch_test

import (
	"context"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// A DestinationRule in the client's namespace reaches the node Envoy
// through the live path: the controller serves the variant cluster it
// shapes (round robin, subset v1) and a class route configuration that
// uses it, and withdraws the variant when the rule is deleted.
func TestClientNamespaceDestinationRuleServed(t *testing.T) {
	env := kubetest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	optIn := map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh}
	nsA, nsB := env.Namespace(t, "vis-a", optIn), env.Namespace(t, "vis-b", optIn)
	node := "node-" + nsA
	host := "api." + nsA + ".svc.cluster.local"
	pod := func(ns, name, ip string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}}
	}
	objs := []any{
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: nsA}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "api"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8080}},
		}},
		pod(nsA, "api-v1", "10.99.1.10", map[string]string{"app": "api", "version": "v1"}),
		pod(nsB, "client", "10.99.1.11", nil),
	}
	for _, o := range objs {
		if _, err := env.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	dr := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Name: "api-from-b", Namespace: nsB}}
	dr.Spec = networking.DestinationRule{
		Host:          host,
		TrafficPolicy: &networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_ROUND_ROBIN}}},
		Subsets:       []*networking.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}},
	}
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "api-v1", Namespace: nsB}}
	vs.Spec = networking.VirtualService{
		Hosts:    []string{host},
		ExportTo: []string{"."},
		Http:     []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: host, Subset: "v1"}}}}},
	}
	if _, err := env.Istio.NetworkingV1().DestinationRules(nsB).Create(ctx, dr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Istio.NetworkingV1().VirtualServices(nsB).Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	c := startController(t, env.Config, 20*time.Millisecond)
	ads, err := xdstest.NewADSClient(ctx, c.addr, &corev3.Node{Id: node}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ads.Close() })
	// variant is the served v1~ cluster of api and whether a served route
	// configuration routes to it.
	variant := func(s xdstest.States) (c *clusterv3.Cluster, routed bool) {
		for name, a := range s[resourcev3.ClusterType].Resources {
			if strings.HasPrefix(name, "outbound|8080|v1~") && strings.HasSuffix(name, "|"+host) {
				c = &clusterv3.Cluster{}
				if err := a.UnmarshalTo(c); err != nil {
					t.Fatal(err)
				}
			}
		}
		if c == nil {
			return nil, false
		}
		for _, a := range s[resourcev3.RouteType].Resources {
			rc := &routev3.RouteConfiguration{}
			if err := a.UnmarshalTo(rc); err != nil {
				t.Fatal(err)
			}
			for _, vh := range rc.GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					routed = routed || r.GetRoute().GetCluster() == c.GetName()
				}
			}
		}
		return c, routed
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := ads.Wait(wctx, func(s xdstest.States) bool {
		c, routed := variant(s)
		return xdstest.AllACKed(s) && c != nil && routed && c.GetLbPolicy() == clusterv3.Cluster_ROUND_ROBIN
	}); err != nil {
		t.Fatalf("no served round-robin variant of %s's v1 cluster that a route uses: %v", host, err)
	}

	if err := env.Istio.NetworkingV1().DestinationRules(nsB).Delete(ctx, dr.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ads.Wait(wctx, func(s xdstest.States) bool {
		c, _ := variant(s)
		return c == nil
	}); err != nil {
		t.Fatalf("the variant cluster is still served after its DestinationRule was deleted: %v", err)
	}
}
