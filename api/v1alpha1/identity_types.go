package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// IdentityKeyHashLabel is the label every Identity carries: the hash of its
// spec (agent/identity's Key.Hash), so that agents find the identities of
// a label set with a label selector.
const IdentityKeyHashLabel = GroupName + "/key-hash"

// Identity is a security identity of the nodemesh eBPF datapath: one object
// per distinct (namespace, service account, filtered pod labels). The
// object's name is its numeric identity, so the API server guarantees that
// no two label sets share a number. Written by nodemesh agents
// (create-if-absent), read by every agent; see docs/design/identity.md.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,path=identities,singular=identity,shortName=nmid,categories=nodemesh
// +kubebuilder:metadata:labels="app.kubernetes.io/part-of=nodemesh"
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=".spec.namespace"
// +kubebuilder:printcolumn:name="ServiceAccount",type=string,JSONPath=".spec.serviceAccount"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type Identity struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// What the identity stands for; immutable.
	Spec IdentitySpec `json:"spec"`
}

// IdentitySpec is what an identity stands for. It never changes: a number
// must not change meaning while a node uses it.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="identities are immutable"
type IdentitySpec struct {
	// Namespace of the pods.
	Namespace string `json:"namespace"`
	// ServiceAccount of the pods.
	// +optional
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// Labels of the pods, without those that differ between pods of one
	// workload (pod-template-hash, ...).
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Labels map[string]string `json:"labels,omitempty"`
}

// IdentityList is a list of Identities.
//
// +kubebuilder:object:root=true
type IdentityList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Identity `json:"items"`
}
