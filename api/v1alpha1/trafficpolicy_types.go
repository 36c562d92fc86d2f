package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// TrafficPolicy is nodemesh's own L3/L4 policy: allow or deny traffic to or
// from the selected pods of its namespace, by peer (pods, namespaces, CIDRs)
// and port. It is enforced in eBPF on the node, next to NetworkPolicy.
//
// An Allow policy is a NetworkPolicy in all but name: the pods it selects
// are isolated in each direction it has rules for (a present but empty
// list isolates and allows nothing), and its rules allow. A Deny policy
// isolates nothing: its rules become deny entries, which win over every
// allow — of NetworkPolicies and Allow policies alike, and of the agent's
// own (the node's access for kubelet probes: a Deny of every peer denies
// the node too). See docs/design/datapath.md for the verdict order.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,path=trafficpolicies,singular=trafficpolicy,shortName=ntp,categories=nodemesh
// +kubebuilder:metadata:labels="app.kubernetes.io/part-of=nodemesh"
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=".spec.action"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type TrafficPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// The pods the policy applies to, what it does and its rules.
	Spec TrafficPolicySpec `json:"spec"`
}

// TrafficAction is what a TrafficPolicy does with the traffic its rules
// match.
//
// +kubebuilder:validation:Enum=Allow;Deny
type TrafficAction string

// Actions of a TrafficPolicy.
const (
	ActionAllow TrafficAction = "Allow"
	ActionDeny  TrafficAction = "Deny"
)

// TrafficPolicySpec is the spec of a TrafficPolicy.
//
// Whether Ingress and Egress are present matters, not only their items: a
// present but empty list isolates the direction (of an Allow policy). They
// have no omitempty, so that a Go client's empty list reaches the API server
// as [] and a nil one as null, which the API server drops.
//
// +kubebuilder:validation:XValidation:rule="has(self.ingress) || has(self.egress)",message="a policy needs ingress or egress rules (or both)"
type TrafficPolicySpec struct {
	// The pods of this namespace the policy applies to; empty selects all.
	// +optional
	Selector LabelSelector `json:"selector,omitempty"`
	// Allow or Deny the traffic the rules match.
	Action TrafficAction `json:"action"`
	// Traffic to the selected pods.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Ingress []TrafficRule `json:"ingress"`
	// Traffic from the selected pods.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Egress []TrafficRule `json:"egress"`
}

// TrafficRule is one ingress or egress rule: it matches traffic with any of
// its peers on any of its ports.
type TrafficRule struct {
	// Who is on the other side; empty matches everyone.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Peers []TrafficPeer `json:"peers,omitempty"`
	// Which ports; empty matches every port.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Ports []TrafficPort `json:"ports,omitempty"`
}

// TrafficPeer is one peer: exactly one field is set.
//
// +kubebuilder:validation:MinProperties=1
// +kubebuilder:validation:MaxProperties=1
type TrafficPeer struct {
	// Pods of the policy's namespace.
	// +optional
	PodSelector *LabelSelector `json:"podSelector,omitempty"`
	// Every pod of the selected namespaces.
	// +optional
	NamespaceSelector *LabelSelector `json:"namespaceSelector,omitempty"`
	// An IPv4 or IPv6 CIDR (e.g. 10.0.0.0/8).
	// +optional
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="not a CIDR (e.g. 10.0.0.0/8)"
	CIDR string `json:"cidr,omitempty"`
}

// TrafficPort is a port or a range of ports of one protocol.
//
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || self.endPort >= self.port",message="endPort must not be below port"
type TrafficPort struct {
	// +optional
	// +kubebuilder:default=TCP
	// +kubebuilder:validation:Enum=TCP;UDP;SCTP
	Protocol string `json:"protocol,omitempty"`
	// The port, or the first of the range.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// The last port of the range (inclusive); none: Port alone.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	EndPort int32 `json:"endPort,omitempty"`
}

// LabelSelector is metav1.LabelSelector with the operators checked by the
// API server: the upstream type's schema leaves the operator a free
// string, and a TrafficPolicy with an operator the agent cannot evaluate
// would be accepted, then only reported by the agent. AsMeta converts it
// for the Kubernetes selector machinery.
//
// +structType=atomic
type LabelSelector struct {
	// Labels a pod (or namespace) must have, key and value; ANDed with
	// each other and with matchExpressions.
	// +optional
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
	// Requirements on labels, ANDed.
	// +optional
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelSelectorRequirement is one requirement of a label selector: a key,
// an operator and values.
type LabelSelectorRequirement struct {
	// The label key.
	Key string `json:"key"`
	// In and NotIn need values; Exists and DoesNotExist take none.
	// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist
	Operator metav1.LabelSelectorOperator `json:"operator"`
	// The values In and NotIn compare with.
	// +optional
	Values []string `json:"values,omitempty"`
}

// AsMeta is the selector as a metav1.LabelSelector; a nil selector is nil.
func (s *LabelSelector) AsMeta() *metav1.LabelSelector {
	if s == nil {
		return nil
	}
	out := &metav1.LabelSelector{MatchLabels: s.MatchLabels}
	for _, r := range s.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, metav1.LabelSelectorRequirement{Key: r.Key, Operator: r.Operator, Values: r.Values})
	}
	return out
}

// TrafficPolicyList is a list of TrafficPolicies.
//
// +kubebuilder:object:root=true
type TrafficPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficPolicy `json:"items"`
}
