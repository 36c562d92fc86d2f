package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is nodemesh's API group.
const GroupName = "nodemesh.io"

// GroupVersion is this package's group and version.
var GroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// Kinds, resources and CRD names.
const (
	IdentityKind      = "Identity"
	TrafficPolicyKind = "TrafficPolicy"

	// IdentityCRD and TrafficPolicyCRD are the CustomResourceDefinitions'
	// names (<plural>.<group>).
	IdentityCRD      = "identities." + GroupName
	TrafficPolicyCRD = "trafficpolicies." + GroupName
)

// IdentityResource and TrafficPolicyResource are the resources, for dynamic
// clients and informers.
var (
	IdentityResource      = GroupVersion.WithResource("identities")
	TrafficPolicyResource = GroupVersion.WithResource("trafficpolicies")
)

var (
	// SchemeBuilder registers this package's types.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds this package's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Identity{}, &IdentityList{}, &TrafficPolicy{}, &TrafficPolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
