package kubetest

import (
	"context"
	"fmt"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Create creates a typed object as it is: for a Pod, its status too (the
// API ignores status on create; without a kubelet the test sets it). It
// returns the created object.
func (e *Env) Create(ctx context.Context, obj any) (any, error) {
	opts := metav1.CreateOptions{}
	switch o := obj.(type) {
	case *corev1.Namespace:
		return e.Client.CoreV1().Namespaces().Create(ctx, o, opts)
	case *corev1.Node:
		return e.Client.CoreV1().Nodes().Create(ctx, o, opts)
	case *corev1.Service:
		return e.Client.CoreV1().Services(o.Namespace).Create(ctx, o, opts)
	case *discoveryv1.EndpointSlice:
		return e.Client.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, opts)
	case *corev1.Pod:
		created, err := e.Client.CoreV1().Pods(o.Namespace).Create(ctx, o, opts)
		if err != nil {
			return nil, err
		}
		created.Status = o.Status
		return e.Client.CoreV1().Pods(o.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	case *networkingv1.VirtualService:
		return e.Istio.NetworkingV1().VirtualServices(o.Namespace).Create(ctx, o, opts)
	case *networkingv1.DestinationRule:
		return e.Istio.NetworkingV1().DestinationRules(o.Namespace).Create(ctx, o, opts)
	case *networkingv1.ServiceEntry:
		return e.Istio.NetworkingV1().ServiceEntries(o.Namespace).Create(ctx, o, opts)
	case *securityv1.AuthorizationPolicy:
		return e.Istio.SecurityV1().AuthorizationPolicies(o.Namespace).Create(ctx, o, opts)
	}
	return nil, fmt.Errorf("kubetest: cannot create %T", obj)
}
