package input

import (
	"slices"

	extensionsv1alpha1 "istio.io/client-go/pkg/apis/extensions/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// kindInfo describes a kind the loader decodes.
type kindInfo struct {
	group string
	// versions it accepts, the one an API server serves first.
	versions   []string
	namespaced bool
	// resource is the kind's API resource (its plural name).
	resource string
	// translated kinds go into the Bag's typed lists. The others are kinds
	// tools read besides (the migration analyzer): decoded — as strictly,
	// with the same diagnostics — only for Loader.KeepIgnored, into
	// Object.Typed, and otherwise ignored like any kind not listed here.
	translated bool
	// decode returns the typed object and whether it decoded cleanly.
	decode func(d *docCtx) (any, bool)
}

var (
	istioVersions    = []string{"v1", "v1beta1", "v1alpha3"}
	securityVersions = []string{"v1", "v1beta1"}
)

// kindTable lists the kinds the Loader knows, in the order an API server
// accepts them (namespaces first).
var kindTable = []struct {
	kind string
	kindInfo
}{
	{"Namespace", kindInfo{"", []string{"v1"}, false, "namespaces", true, func(d *docCtx) (any, bool) {
		o := &corev1.Namespace{}
		return o, d.decodeKube(o)
	}}},
	{"Service", kindInfo{"", []string{"v1"}, true, "services", true, func(d *docCtx) (any, bool) {
		o := &corev1.Service{}
		return o, d.decodeKube(o)
	}}},
	{"Pod", kindInfo{"", []string{"v1"}, true, "pods", true, func(d *docCtx) (any, bool) {
		o := &corev1.Pod{}
		return o, d.decodeKube(o)
	}}},
	{"EndpointSlice", kindInfo{"discovery.k8s.io", []string{"v1"}, true, "endpointslices", true, func(d *docCtx) (any, bool) {
		o := &discoveryv1.EndpointSlice{}
		return o, d.decodeKube(o)
	}}},
	{"VirtualService", kindInfo{"networking.istio.io", istioVersions, true, "virtualservices", true, func(d *docCtx) (any, bool) {
		o := &networkingv1.VirtualService{}
		return o, d.decodeIstio(&o.TypeMeta, &o.ObjectMeta, &o.Spec, true)
	}}},
	{"DestinationRule", kindInfo{"networking.istio.io", istioVersions, true, "destinationrules", true, func(d *docCtx) (any, bool) {
		o := &networkingv1.DestinationRule{}
		return o, d.decodeIstio(&o.TypeMeta, &o.ObjectMeta, &o.Spec, true)
	}}},
	{"ServiceEntry", kindInfo{"networking.istio.io", istioVersions, true, "serviceentries", true, func(d *docCtx) (any, bool) {
		o := &networkingv1.ServiceEntry{}
		return o, d.decodeIstio(&o.TypeMeta, &o.ObjectMeta, &o.Spec, true)
	}}},
	{"Gateway", kindInfo{"networking.istio.io", istioVersions, true, "gateways", true, func(d *docCtx) (any, bool) {
		o := &networkingv1.Gateway{}
		return o, d.decodeIstio(&o.TypeMeta, &o.ObjectMeta, &o.Spec, true)
	}}},

	// Not translated: what the migration analyzer reads besides. Istio's
	// CRDs do not require a spec (an AuthorizationPolicy without one
	// allows nothing), so none is required here.
	{"Deployment", kindInfo{"apps", []string{"v1"}, true, "deployments", false, func(d *docCtx) (any, bool) {
		o := &appsv1.Deployment{}
		return o, d.decodeKube(o)
	}}},
	{"StatefulSet", kindInfo{"apps", []string{"v1"}, true, "statefulsets", false, func(d *docCtx) (any, bool) {
		o := &appsv1.StatefulSet{}
		return o, d.decodeKube(o)
	}}},
	{"DaemonSet", kindInfo{"apps", []string{"v1"}, true, "daemonsets", false, func(d *docCtx) (any, bool) {
		o := &appsv1.DaemonSet{}
		return o, d.decodeKube(o)
	}}},
	{"PodDisruptionBudget", kindInfo{"policy", []string{"v1"}, true, "poddisruptionbudgets", false, func(d *docCtx) (any, bool) {
		o := &policyv1.PodDisruptionBudget{}
		return o, d.decodeKube(o)
	}}},
	{"Sidecar", kindInfo{"networking.istio.io", istioVersions, true, "sidecars", false, func(d *docCtx) (any, bool) {
		o := &networkingv1.Sidecar{}
		return o, d.decodeIstio(&o.TypeMeta, &o.ObjectMeta, &o.Spec, false)
	}}},
	{"EnvoyFilter", kindInfo{"networking.istio.io", []string{"v1alpha3"}, true, "envoyfilters", false, func(d *docCtx) (any, bool) {
		o := &networkingv1alpha3.EnvoyFilter{}
		return o, d.decodeIstio(&o.TypeMeta, &o.ObjectMeta, &o.Spec, false)
	}}},
	{"AuthorizationPolicy", kindInfo{"security.istio.io", securityVersions, true, "authorizationpolicies", false, func(d *docCtx) (any, bool) {
		o := &securityv1.AuthorizationPolicy{}
		return o, d.decodeIstio(&o.TypeMeta, &o.ObjectMeta, &o.Spec, false)
	}}},
	{"PeerAuthentication", kindInfo{"security.istio.io", securityVersions, true, "peerauthentications", false, func(d *docCtx) (any, bool) {
		o := &securityv1.PeerAuthentication{}
		return o, d.decodeIstio(&o.TypeMeta, &o.ObjectMeta, &o.Spec, false)
	}}},
	{"RequestAuthentication", kindInfo{"security.istio.io", securityVersions, true, "requestauthentications", false, func(d *docCtx) (any, bool) {
		o := &securityv1.RequestAuthentication{}
		return o, d.decodeIstio(&o.TypeMeta, &o.ObjectMeta, &o.Spec, false)
	}}},
	{"WasmPlugin", kindInfo{"extensions.istio.io", []string{"v1alpha1"}, true, "wasmplugins", false, func(d *docCtx) (any, bool) {
		o := &extensionsv1alpha1.WasmPlugin{}
		return o, d.decodeIstio(&o.TypeMeta, &o.ObjectMeta, &o.Spec, false)
	}}},
	{"Telemetry", kindInfo{"telemetry.istio.io", []string{"v1", "v1alpha1"}, true, "telemetries", false, func(d *docCtx) (any, bool) {
		o := &telemetryv1.Telemetry{}
		return o, d.decodeIstio(&o.TypeMeta, &o.ObjectMeta, &o.Spec, false)
	}}},
}

// kinds indexes kindTable by kind.
var kinds = func() map[string]kindInfo {
	m := make(map[string]kindInfo, len(kindTable))
	for _, k := range kindTable {
		m[k.kind] = k.kindInfo
	}
	return m
}()

// Kind is a kind the Loader decodes.
type Kind struct {
	Group, Kind string
	// Version is the version an API server serves it at (the Loader also
	// reads older ones of the same schema).
	Version string
	// Resource is its API resource (plural name).
	Resource   string
	Namespaced bool
	// Translated kinds fill the Bag's typed lists; the others are decoded
	// only for Loader.KeepIgnored (Object.Typed).
	Translated bool
}

// Kinds lists the kinds the Loader decodes, in the order an API server
// accepts them (namespaces first): what a tool that reads a live cluster
// lists so that it decodes exactly what files give.
func Kinds() []Kind {
	out := make([]Kind, 0, len(kindTable))
	for _, k := range kindTable {
		out = append(out, Kind{Group: k.group, Kind: k.kind, Version: k.versions[0], Resource: k.resource,
			Namespaced: k.namespaced, Translated: k.translated})
	}
	return slices.Clip(out)
}

// clusterScoped lists well-known cluster-scoped kinds of other groups, so that
// ignored objects are named correctly.
var clusterScoped = map[string]bool{
	"Namespace": true, "Node": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"CustomResourceDefinition": true, "PersistentVolume": true, "StorageClass": true,
	"MutatingWebhookConfiguration": true, "ValidatingWebhookConfiguration": true,
	"PriorityClass": true, "IngressClass": true, "GatewayClass": true, "ClusterIssuer": true,
	"APIService": true, "RuntimeClass": true,
}
