package input

import (
	"cmp"
	"slices"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Bag holds the objects the translator reads. Istio resources are normalised
// to networking.istio.io/v1 whatever version they were written in (the specs
// are identical). Slices are sorted by namespace and name after Sort.
type Bag struct {
	VirtualServices  []*networkingv1.VirtualService
	DestinationRules []*networkingv1.DestinationRule
	// ServiceEntries and Gateways are not translated yet; they are kept so that
	// references to them are reported as unsupported rather than missing.
	ServiceEntries []*networkingv1.ServiceEntry
	Gateways       []*networkingv1.Gateway
	Services       []*corev1.Service
	Pods           []*Pod
	Namespaces     []*corev1.Namespace
	EndpointSlices []*discoveryv1.EndpointSlice
	// Ignored lists objects of kinds nodemesh does not translate.
	Ignored []ir.ResourceRef
	// Other holds the ignored objects themselves when the Loader was asked
	// to keep them (Loader.KeepIgnored); translation never reads them.
	Other []*Object

	// Sources maps an object to where it was read from (files only).
	Sources map[ir.ResourceRef]*Source

	// podObjects are the Pods added as corev1.Pods, for Objects.
	podObjects []*corev1.Pod
}

// Ref builds the ResourceRef of an object of a kind.
func Ref(kind string, m metav1.Object) ir.ResourceRef {
	return ir.ResourceRef{Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName()}
}

// Locate fills File and Line of diagnostics about objects read from files.
func (b *Bag) Locate(ds ir.Diagnostics) {
	if b == nil || len(b.Sources) == 0 {
		return
	}
	for i := range ds {
		d := &ds[i]
		if d.File != "" {
			continue
		}
		if src := b.Sources[d.Resource]; src != nil {
			d.File = src.File
			d.Line = src.LineOf(d.Field)
		}
	}
}

// Sort orders every slice by namespace and name.
func (b *Bag) Sort() {
	sortObjs(b.VirtualServices)
	sortObjs(b.DestinationRules)
	sortObjs(b.ServiceEntries)
	sortObjs(b.Gateways)
	sortObjs(b.Services)
	sortObjs(b.Pods)
	sortObjs(b.Namespaces)
	sortObjs(b.EndpointSlices)
	slices.SortFunc(b.Ignored, ir.ResourceRef.Compare)
	slices.SortStableFunc(b.Other, func(x, y *Object) int { return x.Ref.Compare(y.Ref) })
}

// Object is a manifest of a kind the translator does not read, kept as JSON.
type Object struct {
	Ref        ir.ResourceRef
	APIVersion string
	// JSON is the whole object.
	JSON []byte
	// Typed is the object decoded into its Go type when its kind is one the
	// Loader knows without translating it (Kinds: Deployments,
	// AuthorizationPolicies, …), decoded as strictly as translated kinds;
	// nil for other kinds, and when it did not decode (the Loader's
	// diagnostics say why).
	Typed  any
	Source *Source
}

// named is what sorting needs of an object.
type named interface {
	GetNamespace() string
	GetName() string
}

func sortObjs[T named](s []T) {
	slices.SortFunc(s, func(a, b T) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
}

// Add puts a typed object in the bag. Unknown types are ignored and reported
// by the false result.
func (b *Bag) Add(obj any) bool {
	switch o := obj.(type) {
	case *networkingv1.VirtualService:
		b.VirtualServices = append(b.VirtualServices, o)
	case *networkingv1.DestinationRule:
		b.DestinationRules = append(b.DestinationRules, o)
	case *networkingv1.ServiceEntry:
		b.ServiceEntries = append(b.ServiceEntries, o)
	case *networkingv1.Gateway:
		b.Gateways = append(b.Gateways, o)
	case *corev1.Service:
		b.Services = append(b.Services, o)
	case *corev1.Pod:
		b.Pods = append(b.Pods, PodFrom(o))
		b.podObjects = append(b.podObjects, o)
	case *Pod:
		b.Pods = append(b.Pods, o)
	case *corev1.Namespace:
		b.Namespaces = append(b.Namespaces, o)
	case *discoveryv1.EndpointSlice:
		b.EndpointSlices = append(b.EndpointSlices, o)
	case *securityv1.AuthorizationPolicy:
		// Not translated into routing: kept typed, as a Loader with
		// KeepIgnored keeps it (the inbound listeners read it).
		b.Other = append(b.Other, &Object{Ref: Ref("AuthorizationPolicy", o), APIVersion: securityv1.SchemeGroupVersion.String(), Typed: o})
	case *securityv1.RequestAuthentication:
		// Likewise: the inbound listeners' jwt_authn.
		b.Other = append(b.Other, &Object{Ref: Ref("RequestAuthentication", o), APIVersion: securityv1.SchemeGroupVersion.String(), Typed: o})
	case *securityv1.PeerAuthentication:
		// Likewise: the mode of the inbound listeners' mTLS termination
		// (with Istio mTLS).
		b.Other = append(b.Other, &Object{Ref: Ref("PeerAuthentication", o), APIVersion: securityv1.SchemeGroupVersion.String(), Typed: o})
	default:
		return false
	}
	return true
}

// Objects lists every object in the bag, the inverse of Add: namespaces
// first (then Services, Pods, EndpointSlices and Istio resources), the order
// in which an API server accepts them. Pods are the corev1.Pods that were
// added (a Bag keeps only what translation reads of them in Pods).
func (b *Bag) Objects() []any {
	var out []any
	out = appendAll(out, b.Namespaces)
	out = appendAll(out, b.Services)
	out = appendAll(out, b.podObjects)
	out = appendAll(out, b.EndpointSlices)
	out = appendAll(out, b.DestinationRules)
	out = appendAll(out, b.VirtualServices)
	out = appendAll(out, b.ServiceEntries)
	out = appendAll(out, b.Gateways)
	for _, o := range b.Other {
		switch t := o.Typed.(type) { // (what Add keeps typed in Other)
		case *securityv1.AuthorizationPolicy:
			out = append(out, t)
		case *securityv1.RequestAuthentication:
			out = append(out, t)
		case *securityv1.PeerAuthentication:
			out = append(out, t)
		}
	}
	return out
}

func appendAll[T any](out []any, objs []T) []any {
	for _, o := range objs {
		out = append(out, o)
	}
	return out
}
