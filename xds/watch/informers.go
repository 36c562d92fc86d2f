package watch

import (
	"maps"
	"slices"
	"sync/atomic"
	"time"
	"unique"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/nodemesh/nodemesh/translate"
)

// sources are the informers the controller reads the cluster through.
type sources struct {
	kube  informers.SharedInformerFactory
	istio istioinformers.SharedInformerFactory

	services, slices, pods, namespaces, nodes cache.SharedIndexInformer
	virtualServices, destinationRules         cache.SharedIndexInformer
	serviceEntries                            cache.SharedIndexInformer
	// authz is the AuthorizationPolicy informer once the kind is served
	// and it has synced (authz.go); nil before.
	authz atomic.Pointer[cache.SharedIndexInformer]
	// peerAuthn is the PeerAuthentication informer, likewise.
	peerAuthn atomic.Pointer[cache.SharedIndexInformer]
	// reqAuthn is the RequestAuthentication informer, likewise.
	reqAuthn atomic.Pointer[cache.SharedIndexInformer]
}

func (s *sources) reqAuthnInformer() cache.SharedIndexInformer {
	if p := s.reqAuthn.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *sources) peerAuthnInformer() cache.SharedIndexInformer {
	if p := s.peerAuthn.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *sources) authzInformer() cache.SharedIndexInformer {
	if p := s.authz.Load(); p != nil {
		return *p
	}
	return nil
}

func newSources(kube kubernetes.Interface, ic istioclient.Interface) *sources {
	kf := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTransform(transform))
	isf := istioinformers.NewSharedInformerFactoryWithOptions(ic, 0, istioinformers.WithTransform(transform))
	return &sources{
		kube: kf, istio: isf,
		services:         kf.Core().V1().Services().Informer(),
		slices:           kf.Discovery().V1().EndpointSlices().Informer(),
		pods:             kf.Core().V1().Pods().Informer(),
		namespaces:       kf.Core().V1().Namespaces().Informer(),
		nodes:            kf.Core().V1().Nodes().Informer(),
		virtualServices:  isf.Networking().V1().VirtualServices().Informer(),
		destinationRules: isf.Networking().V1().DestinationRules().Informer(),
		serviceEntries:   isf.Networking().V1().ServiceEntries().Informer(),
	}
}

func (s *sources) all() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{s.services, s.slices, s.pods, s.namespaces, s.nodes, s.virtualServices, s.destinationRules, s.serviceEntries}
}

// bag lists every object into a translator input.
func (s *sources) bag() *translate.Bag {
	b := &translate.Bag{}
	for _, inf := range []cache.SharedIndexInformer{s.services, s.slices, s.pods, s.namespaces, s.virtualServices, s.destinationRules, s.serviceEntries} {
		for _, o := range inf.GetStore().List() {
			b.Add(o)
		}
	}
	for _, inf := range []cache.SharedIndexInformer{s.authzInformer(), s.reqAuthnInformer(), s.peerAuthnInformer()} {
		if inf == nil {
			continue
		}
		// They decide the nodes' inbound listeners (PeerAuthentications
		// only with Istio mTLS: the translation reads them only then).
		for _, o := range inf.GetStore().List() {
			b.Add(o)
		}
	}
	b.Sort()
	return b
}

// nodeNames lists the cluster's Nodes.
func (s *sources) nodeNames() []string {
	var out []string
	for _, o := range s.nodes.GetStore().List() {
		out = append(out, o.(*corev1.Node).Name)
	}
	slices.Sort(out)
	return out
}

// object finds an object by kind, namespace and name (for events).
func (s *sources) object(kind, namespace, name string) (any, bool) {
	var inf cache.SharedIndexInformer
	switch kind {
	case "VirtualService":
		inf = s.virtualServices
	case "DestinationRule":
		inf = s.destinationRules
	case "ServiceEntry":
		inf = s.serviceEntries
	case "Service":
		inf = s.services
	case "EndpointSlice":
		inf = s.slices
	case "Pod":
		inf = s.pods
	case "Namespace":
		inf = s.namespaces
	case authzKind:
		inf = s.authzInformer()
	case peerAuthnKind:
		inf = s.peerAuthnInformer()
	default:
		return nil, false
	}
	if inf == nil {
		return nil, false
	}
	key := name
	if namespace != "" {
		key = namespace + "/" + name
	}
	o, ok, err := inf.GetStore().GetByKey(key)
	return o, ok && err == nil
}

// transform strips what the translator never reads before objects enter the
// informer caches: managed fields and the last-applied annotation on every
// object, all of a Node but its name and labels, and a Pod becomes an
// translate.Pod (what translation reads of it), an EndpointSlice keeps only
// what endpoints are made of. Strings many objects repeat — namespaces,
// label keys and values, node names — are interned. Pods are the bulk of a
// cluster; this is most of the controller's memory.
func transform(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a != nil {
			delete(a, corev1.LastAppliedConfigAnnotation)
			if len(a) == 0 {
				m.SetAnnotations(nil)
			}
		}
		m.SetNamespace(intern(m.GetNamespace()))
		if l := m.GetLabels(); len(l) > 0 {
			m.SetLabels(internMap(l))
		}
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		p := translate.PodFrom(o)
		p.NodeName = intern(p.NodeName)
		return p, nil
	case *discoveryv1.EndpointSlice:
		for i := range o.Endpoints {
			e := &o.Endpoints[i]
			e.Hostname, e.Hints, e.DeprecatedTopology = nil, nil, nil
			e.Conditions.Serving, e.Conditions.Terminating = nil, nil
			if e.NodeName != nil {
				*e.NodeName = intern(*e.NodeName)
			}
			if e.Zone != nil {
				*e.Zone = intern(*e.Zone)
			}
			if r := e.TargetRef; r != nil {
				e.TargetRef = &corev1.ObjectReference{Kind: intern(r.Kind), Namespace: intern(r.Namespace), Name: r.Name}
			}
		}
		return o, nil
	case *corev1.Node:
		// Only the set of Nodes matters; a Node's status (images,
		// conditions) is tens of kilobytes.
		return &corev1.Node{TypeMeta: o.TypeMeta, ObjectMeta: metav1.ObjectMeta{
			Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion, Labels: o.Labels}}, nil
	}
	return obj, nil
}

// intern returns the canonical copy of a string (package unique: copies
// are dropped once no object uses them).
func intern(s string) string {
	if s == "" {
		return s
	}
	return unique.Make(s).Value()
}

// internMap is a map with its keys and values interned.
func internMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[intern(k)] = intern(v)
	}
	return out
}

// A change is what a batch of events affects. Endpoint-only changes — an
// EndpointSlice, or a Pod's readiness — leave listeners, routes and clusters
// alone; everything else may change anything.
type change struct {
	full bool
	// nodes is set when Nodes came or went: pushes, no translation.
	nodes bool
	// authz is set when AuthorizationPolicies changed: their status is
	// reported again (and, as they decide the nodes' inbound listeners,
	// everything is translated: it comes with full).
	authz bool
	// services are the Services ("namespace/name") whose endpoints changed.
	services map[string]bool
	// first is when the first event of the batch arrived.
	first time.Time
	// events counts the events folded into the batch.
	events int
}

func (c *change) merge(o change) {
	if c.first.IsZero() || (!o.first.IsZero() && o.first.Before(c.first)) {
		c.first = o.first
	}
	c.full = c.full || o.full
	c.nodes = c.nodes || o.nodes
	c.authz = c.authz || o.authz
	c.events += o.events
	if len(o.services) > 0 && c.services == nil {
		c.services = map[string]bool{}
	}
	maps.Copy(c.services, o.services)
}

// classify says what an update of an object changes; ok is false when the
// update changes nothing the translator reads.
func (s *sources) classify(oldObj, newObj any) (change, bool) {
	now := time.Now()
	full := change{full: true, first: now, events: 1}
	switch n := newObj.(type) {
	case *corev1.Node:
		return change{}, false // only the set of Nodes matters
	case *corev1.Namespace:
		o, _ := oldObj.(*corev1.Namespace)
		if o != nil && maps.Equal(o.Labels, n.Labels) {
			return change{}, false
		}
		return full, true
	case *discoveryv1.EndpointSlice:
		o, _ := oldObj.(*discoveryv1.EndpointSlice)
		if o != nil && o.ResourceVersion == n.ResourceVersion {
			return change{}, false
		}
		svcs := map[string]bool{n.Namespace + "/" + n.Labels[discoveryv1.LabelServiceName]: true}
		if o != nil {
			svcs[o.Namespace+"/"+o.Labels[discoveryv1.LabelServiceName]] = true
		}
		return change{services: svcs, first: now, events: 1}, true
	case *translate.Pod:
		o, _ := oldObj.(*translate.Pod)
		if o == nil {
			return full, true
		}
		if o.ResourceVersion == n.ResourceVersion {
			return change{}, false
		}
		oc, nc := *o, *n
		oc.Ready, nc.Ready = "", ""
		if !oc.Equal(&nc) {
			return full, true
		}
		if o.Ready == n.Ready {
			return change{}, false
		}
		// A ServiceEntry's workloadSelector makes the Pod an endpoint of
		// the entry's hosts, which have no Service key for the endpoint
		// shortcut: translate again.
		for _, so := range s.serviceEntries.GetStore().List() {
			se := so.(*networkingv1.ServiceEntry)
			if ws := se.Spec.WorkloadSelector; ws != nil && se.Namespace == n.Namespace && len(ws.Labels) > 0 &&
				labels.SelectorFromSet(ws.Labels).Matches(labels.Set(n.Labels)) {
				return full, true
			}
		}
		// Only readiness changed: the endpoints of the Services selecting
		// the Pod.
		svcs := map[string]bool{}
		for _, so := range s.services.GetStore().List() {
			svc := so.(*corev1.Service)
			if svc.Namespace == n.Namespace && len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(n.Labels)) {
				svcs[svc.Namespace+"/"+svc.Name] = true
			}
		}
		return change{services: svcs, first: now, events: 1}, true
	case metav1.Object:
		if o, ok := oldObj.(metav1.Object); ok && o.GetResourceVersion() == n.GetResourceVersion() {
			return change{}, false
		}
	}
	return full, true
}
