package policy

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Kinds of the policies a Diagnostic names.
const (
	KindNetworkPolicy = "NetworkPolicy"
	KindTrafficPolicy = "TrafficPolicy"
)

// TrafficPolicyGVR is nodemesh's own L3/L4 policy resource.
var TrafficPolicyGVR = schema.GroupVersionResource{Group: "nodemesh.io", Version: "v1alpha1", Resource: "trafficpolicies"}

// Actions of a TrafficPolicy.
const (
	ActionAllow = "Allow"
	ActionDeny  = "Deny"
)

// TrafficPolicy is a trafficpolicies.nodemesh.io object
// (install/chart/crds/trafficpolicies.nodemesh.io.yaml).
//
// An Allow policy is a NetworkPolicy in all but name: the pods it selects
// are isolated in each direction it has rules for (a present but empty
// list isolates and allows nothing), and its rules allow. A Deny policy
// isolates nothing: its rules become deny entries, which win over every
// allow — of NetworkPolicies and Allow policies alike, and of the agent's
// own (the node's access for kubelet probes: a Deny of every peer denies
// the node too). Peers: podSelector (pods of the policy's namespace),
// namespaceSelector (every pod of the selected namespaces) or cidr; no
// peers means every peer; no ports means every port.
type TrafficPolicy struct {
	Namespace, Name string
	Spec            TrafficPolicySpec
	// HasIngress and HasEgress say whether the lists were given at all.
	HasIngress, HasEgress bool
}

// TrafficPolicySpec is the spec of a TrafficPolicy.
type TrafficPolicySpec struct {
	Selector metav1.LabelSelector `json:"selector,omitempty"`
	Action   string               `json:"action"`
	Ingress  []TrafficRule        `json:"ingress,omitempty"`
	Egress   []TrafficRule        `json:"egress,omitempty"`
}

// TrafficRule is one ingress or egress rule.
type TrafficRule struct {
	Peers []TrafficPeer `json:"peers,omitempty"`
	Ports []TrafficPort `json:"ports,omitempty"`
}

// TrafficPeer is one peer: exactly one field is set.
type TrafficPeer struct {
	PodSelector       *metav1.LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	CIDR              string                `json:"cidr,omitempty"`
}

// TrafficPort is a port or a range of one protocol.
type TrafficPort struct {
	Protocol string `json:"protocol,omitempty"`
	Port     int32  `json:"port"`
	EndPort  int32  `json:"endPort,omitempty"`
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
	case ActionAllow, ActionDeny:
	default:
		return nil, fmt.Errorf("spec.action: %q is neither %s nor %s", tp.Spec.Action, ActionAllow, ActionDeny)
	}
	return tp, nil
}

// asNetworkPolicy expresses the policy's selection, peers and ports as a
// NetworkPolicy (the translation into the model shares the NetworkPolicy
// code; whether its rules allow or deny is the caller's).
func (tp *TrafficPolicy) asNetworkPolicy() *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: tp.Namespace, Name: tp.Name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: tp.Spec.Selector},
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

func trafficPeers(peers []TrafficPeer) []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for _, p := range peers {
		np := networkingv1.NetworkPolicyPeer{PodSelector: p.PodSelector, NamespaceSelector: p.NamespaceSelector}
		if p.CIDR != "" {
			np.IPBlock = &networkingv1.IPBlock{CIDR: p.CIDR}
		}
		out = append(out, np)
	}
	return out
}

func trafficPorts(ports []TrafficPort) []networkingv1.NetworkPolicyPort {
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
