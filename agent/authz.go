package agent

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/agent/policy"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Istio's AuthorizationPolicies (security.istio.io): the agent enforces
// their L4 part in the eBPF maps (docs/design/policy.md §3, §7) and so
// watches them itself, as it watches NetworkPolicies.
//
// Istio may not be installed (then there is no such kind), or be installed
// after nodemesh. The agent asks the API server's discovery at start; when
// the kind is served its informer is part of the initial sync (the first
// map write already has the policies: a restarted agent never drops their
// entries for a moment). When it is not, the agent asks again every
// AuthzDiscoveryPeriod and starts the informer once the kind appears —
// Istio's CRDs exist before any AuthorizationPolicy can.

// authzVersions are the versions of security.istio.io the agent reads, in
// order of preference (v1beta1: Istio before 1.22; the schema is the same).
var authzVersions = []string{"v1", "v1beta1"}

// authzWatch is the informer of one of Istio's security kinds
// (AuthorizationPolicy, PeerAuthentication), once there is one.
type authzWatch struct {
	// resource and kind name what it watches (set by New); group is its
	// API group and versions the versions read, in order of preference
	// (default: security.istio.io, authzVersions).
	resource, kind string
	group          string
	versions       []string
	mu             sync.Mutex
	inf            cache.SharedIndexInformer
	gvr            schema.GroupVersionResource
}

func (w *authzWatch) informer() cache.SharedIndexInformer {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.inf
}

// istioWatches are the security.istio.io kinds the agent enforces.
func (a *Agent) istioWatches() []*authzWatch {
	ws := []*authzWatch{&a.authz, &a.peerAuthn, &a.reqAuthn}
	if a.cfg.IstioMTLS {
		// DestinationRules decide which ports the node Envoy terminates
		// Istio mTLS on (mtls.go).
		ws = append(ws, &a.destRules)
	}
	return ws
}

// authzResource is the watch's resource as the API server serves it; ok
// is false when it serves none (Istio is not installed).
func (a *Agent) authzResource(w *authzWatch) (gvr schema.GroupVersionResource, ok bool, err error) {
	group, versions := "security.istio.io", authzVersions
	if w.group != "" {
		group, versions = w.group, w.versions
	}
	for _, v := range versions {
		gv := schema.GroupVersion{Group: group, Version: v}
		list, err := a.cfg.Kube.Discovery().ServerResourcesForGroupVersion(gv.String())
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return gvr, false, fmt.Errorf("discover %s: %w", gv, err)
		}
		for _, r := range list.APIResources {
			if r.Name == w.resource {
				return gv.WithResource(r.Name), true, nil
			}
		}
	}
	return gvr, false, nil
}

// startAuthz creates the informer when the kind is served, before the
// factories start (so it is part of the initial sync). An API server that
// does not answer discovery is an error: the agent cannot know whether
// policies exist, and enforcing without them could allow more than before.
func (a *Agent) startAuthz(w *authzWatch) (bool, error) {
	gvr, ok, err := a.authzResource(w)
	if err != nil || !ok {
		return false, err
	}
	a.addAuthzInformer(w, gvr)
	return true, nil
}

func (a *Agent) addAuthzInformer(w *authzWatch, gvr schema.GroupVersionResource) cache.SharedIndexInformer {
	inf := a.informers.dynFactory.ForResource(gvr).Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.Trigger() },
		UpdateFunc: func(any, any) { a.Trigger() },
		DeleteFunc: func(any) { a.Trigger() },
	})
	w.mu.Lock()
	w.inf, w.gvr = inf, gvr
	w.mu.Unlock()
	return inf
}

// awaitAuthz asks discovery every period until the kind is served, then
// starts its informer and re-syncs once it has listed the policies.
func (a *Agent) awaitAuthz(ctx context.Context, w *authzWatch, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		gvr, ok, err := a.authzResource(w)
		if err != nil {
			a.log.Warn(w.kind+" discovery failed; retrying", "error", err)
			continue
		}
		if !ok {
			continue
		}
		inf := a.addAuthzInformer(w, gvr)
		a.informers.dynFactory.Start(ctx.Done())
		if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			a.log.Info("watching "+w.kind+"s", "resource", gvr.String())
			a.Trigger()
		}
		return
	}
}

// listed is the watch's objects sorted by namespace and name; nil until
// the informer has listed them (the kind appeared while the agent runs).
func (w *authzWatch) listed() []*unstructured.Unstructured {
	inf := w.informer()
	if inf == nil || !inf.HasSynced() {
		return nil
	}
	var us []*unstructured.Unstructured
	for _, o := range inf.GetStore().List() {
		if u, ok := o.(*unstructured.Unstructured); ok {
			us = append(us, u)
		}
	}
	sort.Slice(us, func(i, j int) bool {
		return us[i].GetNamespace()+"/"+us[i].GetName() < us[j].GetNamespace()+"/"+us[j].GetName()
	})
	return us
}

// authorizationPolicies are the policies' models for policy.Input. Until
// the informer has listed them (the kind appeared while the agent runs)
// there are none. A policy that does not decode is enforced as the
// safest thing it could be: every pod of its namespace (of the mesh, in
// the root namespace) isolated for ingress with nothing allowed by it.
func (a *Agent) authorizationPolicies() ([]ir.Policy, []policy.Diagnostic) {
	us := a.authz.listed()
	opts := a.authzOptions()
	var aps []*securityv1.AuthorizationPolicy
	var models []ir.Policy
	var diags []policy.Diagnostic
	for _, u := range us {
		ap, err := policy.DecodeAuthorizationPolicy(u.Object)
		if err == nil {
			aps = append(aps, ap)
			continue
		}
		ref := ir.ResourceRef{Kind: policy.KindAuthorizationPolicy, Namespace: u.GetNamespace(), Name: u.GetName()}
		m := ir.Policy{Source: ref, Gate: ir.GateAuthorization, Action: ir.PolicyAllow, Isolates: []ir.PolicyDirection{ir.PolicyIngress}}
		if ref.Namespace != opts.RootNamespace {
			m.Scope.Namespace = ref.Namespace
		}
		models = append(models, m)
		diags = append(diags, policy.Diagnostic{Severity: policy.Error, Kind: policy.KindAuthorizationPolicy, Namespace: ref.Namespace,
			Name: ref.Name, Field: "spec", Message: fmt.Sprintf("cannot be read (%v): every pod of its namespace is isolated for ingress, no rule of it applies", err)})
	}
	ms, ds := policy.AuthorizationPolicyModels(aps, opts)
	return append(models, ms...), append(diags, ds...)
}

func (a *Agent) authzOptions() policy.AuthzOptions {
	return policy.AuthzOptions{RootNamespace: a.cfg.RootNamespace, TrustDomain: a.cfg.TrustDomain, TrustDomainAliases: a.cfg.TrustDomainAliases}
}
