package policy

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/api/v1alpha1"
)

// Kinds of the policies a Diagnostic names.
const (
	KindNetworkPolicy = "NetworkPolicy"
	KindTrafficPolicy = v1alpha1.TrafficPolicyKind
)

// TrafficPolicy is a trafficpolicies.nodemesh.io object as the translation
// reads it: its spec (api/v1alpha1, where the semantics are described) and
// whether its ingress and egress lists were given at all — a present but
// empty list isolates that direction, which the spec alone cannot say.
type TrafficPolicy struct {
	Namespace, Name string
	Spec            v1alpha1.TrafficPolicySpec
	// HasIngress and HasEgress say whether the lists were given at all.
	HasIngress, HasEgress bool
}

// DecodeTrafficPolicy reads a TrafficPolicy from an object's unstructured
// content (what a dynamic informer holds).
func DecodeTrafficPolicy(namespace, name string, obj map[string]any) (*TrafficPolicy, error) {
	spec, ok := obj["spec"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("spec: missing or not an object")
	}
	tp := &TrafficPolicy{Namespace: namespace, Name: name}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(spec, &tp.Spec, true); err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	_, tp.HasIngress = spec["ingress"]
	_, tp.HasEgress = spec["egress"]
	switch tp.Spec.Action {
	case v1alpha1.ActionAllow, v1alpha1.ActionDeny:
	default:
		return nil, fmt.Errorf("spec.action: %q is neither %s nor %s", tp.Spec.Action, v1alpha1.ActionAllow, v1alpha1.ActionDeny)
	}
	return tp, nil
}

// asNetworkPolicy expresses the policy's selection, peers and ports as a
// NetworkPolicy (the translation into the model shares the NetworkPolicy
// code; whether its rules allow or deny is the caller's).
func (tp *TrafficPolicy) asNetworkPolicy() *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: tp.Namespace, Name: tp.Name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: *tp.Spec.Selector.AsMeta()},
	}
	if tp.HasIngress {
		np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		for _, r := range tp.Spec.Ingress {
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: trafficPeers(r.Peers), Ports: trafficPorts(r.Ports)})
		}
	}
	if tp.HasEgress {
		np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		for _, r := range tp.Spec.Egress {
			np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: trafficPeers(r.Peers), Ports: trafficPorts(r.Ports)})
		}
	}
	return np
}

func trafficPeers(peers []v1alpha1.TrafficPeer) []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for _, p := range peers {
		np := networkingv1.NetworkPolicyPeer{PodSelector: p.PodSelector.AsMeta(), NamespaceSelector: p.NamespaceSelector.AsMeta()}
		if p.CIDR != "" {
			np.IPBlock = &networkingv1.IPBlock{CIDR: p.CIDR}
		}
		out = append(out, np)
	}
	return out
}

func trafficPorts(ports []v1alpha1.TrafficPort) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for _, p := range ports {
		proto := corev1.Protocol(p.Protocol)
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		np := networkingv1.NetworkPolicyPort{Protocol: &proto}
		port := intstr.FromInt32(p.Port)
		np.Port = &port
		if p.EndPort != 0 {
			end := p.EndPort
			np.EndPort = &end
		}
		out = append(out, np)
	}
	return out
}
