package check

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestDNSWaiting: check waits for the cluster DNS only where there is a
// kube-dns Service, and until one of its endpoints is ready.
func TestDNSWaiting(t *testing.T) {
	ready, notReady := true, false
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"}}
	slice := func(r *bool) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-x", Namespace: "kube-system",
			Labels: map[string]string{"kubernetes.io/service-name": "kube-dns"}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: r}}}}
	}
	for name, tc := range map[string]struct {
		objs []any
		wait bool
	}{
		"no kube-dns Service":       {nil, false},
		"no endpoint yet":           {[]any{svc}, true},
		"an endpoint, not ready":    {[]any{svc, slice(&notReady)}, true},
		"a ready endpoint":          {[]any{svc, slice(&ready)}, false},
		"readiness unknown (ready)": {[]any{svc, slice(nil)}, false},
	} {
		t.Run(name, func(t *testing.T) {
			kube := fake.NewClientset()
			for _, o := range tc.objs {
				switch o := o.(type) {
				case *corev1.Service:
					kube.CoreV1().Services(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
				case *discoveryv1.EndpointSlice:
					kube.DiscoveryV1().EndpointSlices(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
				}
			}
			s := &Suite{Kube: kube}
			if why := s.dnsWaiting(context.Background()); (why != "") != tc.wait {
				t.Errorf("dnsWaiting = %q, want waiting %v", why, tc.wait)
			}
		})
	}
}
