package kubeauth

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// IgnoredNamespaces get no CA bundle from NamespacePublisher: Kubernetes'
// own namespaces, the ones istiod's namespace controller leaves alone
// (inject.IgnoredNamespaces).
var IgnoredNamespaces = []string{"kube-system", "kube-public", "kube-node-lease", "local-path-storage"}

// NamespacePublisher keeps the CA bundle in ConfigMap Name of every
// namespace, as istiod's namespace controller keeps istio-ca-root-cert: a
// workload anywhere — a proxyless gRPC client first — mounts it to verify
// the controller, without anyone copying it. A new namespace gets it at
// once; a deleted or edited ConfigMap is put back; a renewed CA reaches
// every namespace within Every. Skip names namespaces left alone (the
// controller's own, where Publisher keeps the chart's ConfigMap, and
// IgnoredNamespaces).
//
// Who can change it: anyone who may edit ConfigMaps in a namespace can
// replace its copy — which only misleads that namespace's own clients, and
// only until the next reconcile. The controller needs create on ConfigMaps
// cluster-wide (create cannot be limited by name) and get/list/watch/update
// on this name only (the chart's ClusterRole).
type NamespacePublisher struct {
	Client  kubernetes.Interface
	Name    string
	Source  BundleSource
	Skip    map[string]bool
	Every   time.Duration
	OnError func(error)
}

// Run publishes until ctx ends.
func (p *NamespacePublisher) Run(ctx context.Context) error {
	every := p.Every
	if every <= 0 {
		every = time.Minute
	}
	nsFactory := informers.NewSharedInformerFactory(p.Client, every)
	cmFactory := informers.NewSharedInformerFactoryWithOptions(p.Client, every,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", p.Name).String()
		}))
	namespaces := nsFactory.Core().V1().Namespaces()
	configMaps := cmFactory.Core().V1().ConfigMaps()

	queue := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "ca-bundle-namespaces"})
	defer queue.ShutDown()
	enqueue := func(ns string) {
		if !p.Skip[ns] {
			queue.Add(ns)
		}
	}
	// A resync (every Every) re-delivers every namespace as an update:
	// that is how a renewed CA reaches them all.
	if _, err := namespaces.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { enqueue(metaNamespaceName(obj)) },
		UpdateFunc: func(_, obj any) { enqueue(metaNamespaceName(obj)) },
	}); err != nil {
		return err
	}
	cmHandler := func(obj any) {
		if cm, ok := objectOf[*corev1.ConfigMap](obj); ok {
			enqueue(cm.Namespace)
		}
	}
	if _, err := configMaps.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { cmHandler(obj) },
		DeleteFunc: cmHandler,
	}); err != nil {
		return err
	}
	nsFactory.Start(ctx.Done())
	cmFactory.Start(ctx.Done())
	defer nsFactory.Shutdown()
	defer cmFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), namespaces.Informer().HasSynced, configMaps.Informer().HasSynced) {
		return ctx.Err()
	}
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	lister := namespaces.Lister()
	for {
		name, shutdown := queue.Get()
		if shutdown {
			return ctx.Err()
		}
		err := p.reconcile(ctx, lister.Get, name)
		if err != nil && ctx.Err() == nil {
			if p.OnError != nil {
				p.OnError(err)
			}
			queue.AddRateLimited(name)
		} else {
			queue.Forget(name)
		}
		queue.Done(name)
	}
}

// reconcile publishes the bundle in one namespace if it still lives.
func (p *NamespacePublisher) reconcile(ctx context.Context, get func(string) (*corev1.Namespace, error), name string) error {
	ns, err := get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.Status.Phase == corev1.NamespaceTerminating || ns.DeletionTimestamp != nil {
		// Creating in a namespace being deleted is refused; nothing to do.
		return nil
	}
	one := &Publisher{Client: p.Client, Namespace: name, Name: p.Name, Source: p.Source}
	err = one.Publish(ctx)
	if apierrors.IsForbidden(err) && isTerminating(err) {
		return nil // deleted between the lister's view and the write
	}
	if err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	return nil
}

// isTerminating tells the API server's refusal to create in a namespace
// being deleted.
func isTerminating(err error) bool {
	return apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}

func metaNamespaceName(obj any) string {
	if ns, ok := objectOf[*corev1.Namespace](obj); ok {
		return ns.Name
	}
	return ""
}

// objectOf unwraps an informer's object, tombstones included.
func objectOf[T any](obj any) (T, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	t, ok := obj.(T)
	return t, ok
}
