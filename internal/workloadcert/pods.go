package workloadcert

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/nodemesh/nodemesh/api"
)

// Meshed reports whether a pod's traffic is nodemesh's (the agent's rule
// for redirection): a running pod of this node, on the pod network, in a
// namespace labelled istio.io/dataplane-mode=nodemesh and not injected
// with sidecars, not opted out, without an istio-proxy container. Only
// such pods' identities get certificates: the node component is trusted
// by the CA for every identity of its node, so it asks for no more than
// the node's own proxy serves.
func Meshed(pod *corev1.Pod, ns *corev1.Namespace, node string) bool {
	if pod == nil || ns == nil || pod.Spec.NodeName != node || pod.Spec.HostNetwork || pod.DeletionTimestamp != nil {
		return false
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return false
	}
	if pod.Labels[api.DataplaneModeLabel] == api.DataplaneModeNone {
		return false
	}
	if ns.Labels[api.DataplaneModeLabel] != api.DataplaneModeNodemesh ||
		ns.Labels[api.IstioInjectionLabel] == api.IstioInjectionEnabled || ns.Labels[api.IstioRevisionLabel] != "" {
		return false
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == api.IstioProxyContainer {
			return false
		}
	}
	return true
}

// NodeIdentities returns the sorted, distinct identities of the meshed pods
// among pods (namespaces by name).
func NodeIdentities(pods []*corev1.Pod, namespaces map[string]*corev1.Namespace, node, trustDomain string) []ID {
	var ids []ID
	for _, p := range pods {
		if !Meshed(p, namespaces[p.Namespace], node) {
			continue
		}
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		ids = append(ids, ID{TrustDomain: trustDomain, Namespace: p.Namespace, ServiceAccount: sa})
	}
	slices.SortFunc(ids, compareIDs)
	return slices.Compact(ids)
}

// WatchNode feeds m with the identities of node's meshed pods, read from
// informers (this node's pods only, and namespaces), until ctx ends. It
// returns once the informers synced and the first set was given to m, or
// with an error if they could not sync.
func WatchNode(ctx context.Context, kube kubernetes.Interface, node, trustDomain string, m *Manager) error {
	if node == "" || trustDomain == "" {
		return fmt.Errorf("watch node: node name and trust domain are required")
	}
	podF := informers.NewSharedInformerFactoryWithOptions(kube, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}))
	nsF := informers.NewSharedInformerFactory(kube, 10*time.Minute)
	pods, nss := podF.Core().V1().Pods(), nsF.Core().V1().Namespaces()
	trigger := make(chan struct{}, 1)
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke(trigger) },
		UpdateFunc: func(any, any) { poke(trigger) },
		DeleteFunc: func(any) { poke(trigger) },
	}
	if _, err := pods.Informer().AddEventHandler(h); err != nil {
		return err
	}
	if _, err := nss.Informer().AddEventHandler(h); err != nil {
		return err
	}
	podF.Start(ctx.Done())
	nsF.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced, nss.Informer().HasSynced) {
		return fmt.Errorf("watch node %s: informers did not sync", node)
	}
	sync := func() {
		ps, _ := pods.Lister().List(labels.Everything())
		nl, _ := nss.Lister().List(labels.Everything())
		byName := make(map[string]*corev1.Namespace, len(nl))
		for _, n := range nl {
			byName[n.Name] = n
		}
		m.SetIdentities(NodeIdentities(ps, byName, node, trustDomain))
	}
	sync()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-trigger:
				// Debounce: a rollout changes many pods at once.
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				sync()
			}
		}
	}()
	return nil
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
