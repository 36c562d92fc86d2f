package kubetest

import (
	"context"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) { Main(m) }

// TestEnvironment checks what every other suite relies on: a reachable API
// server that reports its version, Istio's CRDs serving VirtualServices, and
// per-test namespaces.
func TestEnvironment(t *testing.T) {
	env := Get(t)
	v, err := env.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.Major != "1" || v.GitVersion == "" || v.GitVersion == "v0.0.0-master+$Format:%H$" {
		t.Errorf("server version %+v is not stamped", v)
	}
	ns := env.Namespace(t, "kubetest", nil)
	ctx := context.Background()
	vs := &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: ns},
		Spec: networking.VirtualService{Hosts: []string{"reviews"}, Http: []*networking.HTTPRoute{{
			Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "reviews", Subset: "v1"}}},
		}}},
	}
	if _, err := env.Istio.NetworkingV1().VirtualServices(ns).Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create VirtualService: %v", err)
	}
	got, err := env.Istio.NetworkingV1().VirtualServices(ns).Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Http[0].Route[0].Destination.Subset != "v1" {
		t.Errorf("round trip lost the spec: %v", got.Spec.String())
	}
}
