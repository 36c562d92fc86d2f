//go:build linux

package agent

import (
	"context"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/nodemesh/nodemesh/agent/identity"
	"github.com/nodemesh/nodemesh/agent/policy"
	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/bpf"
)

func everything() labels.Selector { return labels.Everything() }

// informers are the agent's views of the cluster: pods of this node, the
// addresses and identity keys of every other node's pods (remotePods), and
// the cluster-wide namespaces, NetworkPolicies, Services, EndpointSlices and
// identities.
type watchers struct {
	podFactory    informers.SharedInformerFactory
	remoteFactory informers.SharedInformerFactory
	nodeFactory   informers.SharedInformerFactory
	factory       informers.SharedInformerFactory
	dynFactory    dynamicinformer.DynamicSharedInformerFactory

	pods       corelisters.PodLister
	remotePods corelisters.PodLister
	nodes      corelisters.NodeLister
	namespaces corelisters.NamespaceLister
	policies   networkinglisters.NetworkPolicyLister
	services   corelisters.ServiceLister
	slices     discoverylisters.EndpointSliceLister
	identities cache.SharedIndexInformer
	traffic    cache.SharedIndexInformer // trafficpolicies.nodemesh.io
	synced     []cache.InformerSynced
}

const byHashIndex = "hash"

func newInformers(a *Agent) *watchers {
	i := &watchers{}
	i.podFactory = informers.NewSharedInformerFactoryWithOptions(a.cfg.Kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.cfg.NodeName).String()
		}))
	// Pods of the other nodes: only what maps an address to an identity
	// is kept (remotePod), and only changes of it trigger a sync.
	i.remoteFactory = informers.NewSharedInformerFactoryWithOptions(a.cfg.Kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.AndSelectors(
				fields.OneTermNotEqualSelector("spec.nodeName", a.cfg.NodeName),
				fields.OneTermEqualSelector("spec.hostNetwork", "false"),
			).String()
		}),
		informers.WithTransform(remotePod))
	// Nodes: only what the routes to their pods need (routing.go); their
	// status heartbeats do not trigger a sync.
	i.nodeFactory = informers.NewSharedInformerFactoryWithOptions(a.cfg.Kube, 0, informers.WithTransform(routedNode))
	i.factory = informers.NewSharedInformerFactory(a.cfg.Kube, 0)
	i.dynFactory = dynamicinformer.NewDynamicSharedInformerFactory(a.cfg.Dynamic, 0)

	trigger := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.Trigger() },
		UpdateFunc: func(any, any) { a.Trigger() },
		DeleteFunc: func(any) { a.Trigger() },
	}
	podInf := i.podFactory.Core().V1().Pods()
	nsInf := i.factory.Core().V1().Namespaces()
	npInf := i.factory.Networking().V1().NetworkPolicies()
	svcInf := i.factory.Core().V1().Services()
	// EndpointSlices feed the socket load balancing: a backend that
	// becomes ready or goes is in the maps one sync later.
	sliceInf := i.factory.Discovery().V1().EndpointSlices()
	idInf := i.dynFactory.ForResource(v1alpha1.IdentityResource).Informer()
	tpInf := i.dynFactory.ForResource(v1alpha1.TrafficPolicyResource).Informer()
	_ = idInf.AddIndexers(cache.Indexers{byHashIndex: hashIndex})
	for _, inf := range []cache.SharedIndexInformer{podInf.Informer(), nsInf.Informer(), npInf.Informer(), svcInf.Informer(), sliceInf.Informer(), idInf, tpInf} {
		_, _ = inf.AddEventHandler(trigger)
		i.synced = append(i.synced, inf.HasSynced)
	}
	remoteInf := i.remoteFactory.Core().V1().Pods()
	_, _ = remoteInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if p, ok := obj.(*corev1.Pod); ok && p.Status.PodIP != "" {
				a.Trigger()
			}
		},
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Pod)
			c, ok2 := cur.(*corev1.Pod)
			if !ok1 || !ok2 || remoteChanged(o, c) {
				a.Trigger()
			}
		},
		DeleteFunc: func(any) { a.Trigger() },
	})
	i.synced = append(i.synced, remoteInf.Informer().HasSynced)
	nodeInf := i.nodeFactory.Core().V1().Nodes()
	_, _ = nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { a.Trigger() },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Node)
			c, ok2 := cur.(*corev1.Node)
			if !ok1 || !ok2 || nodeChanged(o, c) {
				a.Trigger()
			}
		},
		DeleteFunc: func(any) { a.Trigger() },
	})
	i.synced = append(i.synced, nodeInf.Informer().HasSynced)
	i.nodes = nodeInf.Lister()
	i.remotePods = remoteInf.Lister()
	i.pods, i.namespaces, i.policies, i.services, i.identities = podInf.Lister(), nsInf.Lister(), npInf.Lister(), svcInf.Lister(), idInf
	i.traffic = tpInf
	i.slices = sliceInf.Lister()
	return i
}

// hashIndex indexes Identity objects by their key hash label.
func hashIndex(obj any) ([]string, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return []string{u.GetLabels()[v1alpha1.IdentityKeyHashLabel]}, nil
	}
	return nil, nil
}

func (i *watchers) start(ctx context.Context) {
	i.podFactory.Start(ctx.Done())
	i.remoteFactory.Start(ctx.Done())
	i.nodeFactory.Start(ctx.Done())
	i.factory.Start(ctx.Done())
	i.dynFactory.Start(ctx.Done())
}

func (i *watchers) waitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), i.synced...)
}

func (i *watchers) hasSynced() bool {
	for _, s := range i.synced {
		if !s() {
			return false
		}
	}
	return true
}

func (i *watchers) identitiesByHash(hash string) []identity.Identity {
	objs, _ := i.identities.GetIndexer().ByIndex(byHashIndex, hash)
	return toIdentities(objs)
}

// hasIdentity reports whether the informer has Identity object id for k.
func (i *watchers) hasIdentity(id bpf.Identity, k identity.Key) bool {
	for _, o := range i.identitiesByHash(k.Hash()) {
		if o.ID == id && o.Key.Equal(k) {
			return true
		}
	}
	return false
}

// trafficPolicies decodes the TrafficPolicies; one that does not decode
// (the API server validated it, so only a newer schema could) is returned
// in bad with the error, to be enforced as deny.
func (i *watchers) trafficPolicies() (good []*policy.TrafficPolicy, bad map[*unstructured.Unstructured]error) {
	for _, o := range i.traffic.GetStore().List() {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		tp, err := policy.DecodeTrafficPolicy(u.GetNamespace(), u.GetName(), u.Object)
		if err != nil {
			if bad == nil {
				bad = map[*unstructured.Unstructured]error{}
			}
			bad[u] = err
			continue
		}
		good = append(good, tp)
	}
	return good, bad
}

// storedIdentities are the informer's Identity objects with their UIDs.
func (i *watchers) storedIdentities() []identity.Stored {
	var out []identity.Stored
	for _, o := range i.identities.GetStore().List() {
		if u, ok := o.(*unstructured.Unstructured); ok {
			if id, ok := identity.FromObject(u); ok {
				out = append(out, identity.Stored{Identity: id, UID: u.GetUID()})
			}
		}
	}
	return out
}

func (i *watchers) allIdentities() []identity.Identity {
	return toIdentities(i.identities.GetStore().List())
}

func toIdentities(objs []any) []identity.Identity {
	var out []identity.Identity
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			if id, ok := identity.FromObject(u); ok {
				out = append(out, id)
			}
		}
	}
	return out
}

// remotePod keeps of another node's pod what maps its address to an
// identity: name, namespace, labels, service account, node, phase and
// addresses (a few hundred bytes instead of several KB a pod).
func remotePod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID,
			ResourceVersion: p.ResourceVersion, Labels: p.Labels},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, ServiceAccountName: p.Spec.ServiceAccountName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}, nil
}

// remoteChanged reports whether an update changes what a remote pod
// contributes to the identity map.
func remoteChanged(o, c *corev1.Pod) bool {
	return o.Status.PodIP != c.Status.PodIP || o.Status.Phase != c.Status.Phase ||
		o.Spec.ServiceAccountName != c.Spec.ServiceAccountName || !maps.Equal(o.Labels, c.Labels)
}

// routedNode keeps of a Node what routes to its pods read: name, pod
// CIDRs and addresses.
func routedNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil // a tombstone
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion},
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}

// nodeChanged reports whether an update changes a Node's routes.
func nodeChanged(o, c *corev1.Node) bool {
	return o.Spec.PodCIDR != c.Spec.PodCIDR || !slices.Equal(o.Spec.PodCIDRs, c.Spec.PodCIDRs) ||
		!slices.Equal(o.Status.Addresses, c.Status.Addresses)
}

// apiTimeout bounds the agent's direct API calls on the CNI path.
const apiTimeout = 10 * time.Second
