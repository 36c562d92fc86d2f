package migration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"

	extensionsv1alpha1 "istio.io/client-go/pkg/apis/extensions/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Labels and annotations of Istio's sidecar injection.
const (
	InjectionLabel    = api.IstioInjectionLabel
	RevisionLabel     = api.IstioRevisionLabel
	PodInjectLabel    = api.SidecarInjectLabel
	SidecarContainer  = input.SidecarContainer
	DefaultRootNS     = "istio-system"
	restartAnnotation = "kubectl.kubernetes.io/restartedAt"
)

// Inventory is what analysis reads: the translator's Bag plus the kinds the
// translator ignores (workloads and Istio's security, extension and
// telemetry resources).
type Inventory struct {
	Bag *input.Bag
	// Diagnostics are what decoding found.
	Diagnostics ir.Diagnostics
	Workloads   []*Workload
	PDBs        []*policyv1.PodDisruptionBudget

	AuthorizationPolicies  []*securityv1.AuthorizationPolicy
	PeerAuthentications    []*securityv1.PeerAuthentication
	RequestAuthentications []*securityv1.RequestAuthentication
	Sidecars               []*networkingv1.Sidecar
	EnvoyFilters           []*networkingv1alpha3.EnvoyFilter
	WasmPlugins            []*extensionsv1alpha1.WasmPlugin
	Telemetries            []*telemetryv1.Telemetry
}

// Workload is a Deployment, StatefulSet or DaemonSet: what apply restarts.
type Workload struct {
	Ref      ir.ResourceRef
	Selector *metav1.LabelSelector
	Template corev1.PodTemplateSpec
}

// HasSidecar says whether the pod template itself carries Istio's proxy
// (injected pods get it from the webhook instead; see Inventory.SidecarPods).
func (w *Workload) HasSidecar() bool {
	for _, c := range append(slices.Clone(w.Template.Spec.Containers), w.Template.Spec.InitContainers...) {
		if c.Name == SidecarContainer {
			return true
		}
	}
	return false
}

// LoadFiles reads manifests from files, directories and "-" (stdin), as
// `nodemesh translate` does, keeping the kinds the translator ignores.
func LoadFiles(paths []string, stdin io.Reader, defaultNamespace string) (*Inventory, error) {
	l := input.NewLoader(defaultNamespace)
	l.KeepIgnored = true
	for _, p := range paths {
		var err error
		if p == "-" {
			err = l.LoadReader("<stdin>", stdin)
		} else {
			err = l.LoadPath(p)
		}
		if err != nil {
			return nil, err
		}
	}
	return newInventory(l), nil
}

// LoadCluster lists the same kinds from a cluster, in every namespace, and
// decodes them exactly as files are decoded. Kinds whose API is not served
// (Istio CRDs not installed) are skipped; a forbidden list is an error.
func LoadCluster(ctx context.Context, client dynamic.Interface) (*Inventory, error) {
	l := input.NewLoader("default")
	l.KeepIgnored = true
	for _, k := range input.Kinds() {
		if k.Kind == "EndpointSlice" {
			// Analysis has always read endpoints from the Pods Services
			// select; listing slices too would need a permission more.
			continue
		}
		gvr := schema.GroupVersionResource{Group: k.Group, Version: k.Version, Resource: k.Resource}
		list, err := client.Resource(gvr).List(ctx, metav1.ListOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case apierrors.IsForbidden(err):
			return nil, fmt.Errorf("list %s: %w (analysis needs read access to %s in every namespace)", gvr.Resource, ErrForbidden, gvr.Resource)
		case err != nil:
			return nil, fmt.Errorf("list %s: %w", gvr.Resource, err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			u.SetManagedFields(nil)
			if list.GetAPIVersion() != "" && u.GetAPIVersion() == "" {
				u.SetAPIVersion(gvr.GroupVersion().String())
			}
			data, err := json.Marshal(u.Object)
			if err != nil {
				return nil, fmt.Errorf("encode %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
			}
			l.LoadBytes("", data)
		}
	}
	return newInventory(l), nil
}

func newInventory(l *input.Loader) *Inventory {
	inv := &Inventory{Bag: l.Bag(), Diagnostics: l.Diagnostics()}
	for _, o := range inv.Bag.Other {
		inv.add(o)
	}
	return inv
}

// add files an object the translator ignores, when analysis reads its kind:
// the Loader decoded it (input.Kinds; Typed is nil for other kinds and for
// objects that did not decode, which the Loader reported).
func (inv *Inventory) add(o *input.Object) {
	workload := func(sel *metav1.LabelSelector, tpl corev1.PodTemplateSpec) {
		inv.Workloads = append(inv.Workloads, &Workload{Ref: o.Ref, Selector: sel, Template: tpl})
	}
	switch v := o.Typed.(type) {
	case *appsv1.Deployment:
		workload(v.Spec.Selector, v.Spec.Template)
	case *appsv1.StatefulSet:
		workload(v.Spec.Selector, v.Spec.Template)
	case *appsv1.DaemonSet:
		workload(v.Spec.Selector, v.Spec.Template)
	case *policyv1.PodDisruptionBudget:
		inv.PDBs = append(inv.PDBs, v)
	case *securityv1.AuthorizationPolicy:
		inv.AuthorizationPolicies = append(inv.AuthorizationPolicies, v)
	case *securityv1.PeerAuthentication:
		inv.PeerAuthentications = append(inv.PeerAuthentications, v)
	case *securityv1.RequestAuthentication:
		inv.RequestAuthentications = append(inv.RequestAuthentications, v)
	case *networkingv1.Sidecar:
		inv.Sidecars = append(inv.Sidecars, v)
	case *networkingv1alpha3.EnvoyFilter:
		inv.EnvoyFilters = append(inv.EnvoyFilters, v)
	case *extensionsv1alpha1.WasmPlugin:
		inv.WasmPlugins = append(inv.WasmPlugins, v)
	case *telemetryv1.Telemetry:
		inv.Telemetries = append(inv.Telemetries, v)
	}
}

// namespace returns the Namespace object of a name, nil when the input has none.
func (inv *Inventory) namespace(name string) *corev1.Namespace {
	for _, ns := range inv.Bag.Namespaces {
		if ns.Name == name {
			return ns
		}
	}
	return nil
}

// podsOf lists the Pods of a namespace.
func (inv *Inventory) podsOf(ns string) []*input.Pod {
	var out []*input.Pod
	for _, p := range inv.Bag.Pods {
		if p.Namespace == ns {
			out = append(out, p)
		}
	}
	return out
}

// workloadsOf lists the workloads of a namespace.
func (inv *Inventory) workloadsOf(ns string) []*Workload {
	var out []*Workload
	for _, w := range inv.Workloads {
		if w.Ref.Namespace == ns {
			out = append(out, w)
		}
	}
	return out
}

// servicesOf lists the Services of a namespace.
func (inv *Inventory) servicesOf(ns string) []*corev1.Service {
	var out []*corev1.Service
	for _, s := range inv.Bag.Services {
		if s.Namespace == ns {
			out = append(out, s)
		}
	}
	return out
}

// NamespaceMissing reports whether the input has neither a Namespace object
// nor any object in the namespace.
func (inv *Inventory) NamespaceMissing(ns string) bool {
	if inv.namespace(ns) != nil || len(inv.podsOf(ns)) > 0 || len(inv.workloadsOf(ns)) > 0 || len(inv.servicesOf(ns)) > 0 {
		return false
	}
	return countNS(inv.Bag.VirtualServices, ns)+countNS(inv.Bag.DestinationRules, ns) == 0
}
