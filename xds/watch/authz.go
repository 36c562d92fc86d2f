package watch

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// AuthorizationPolicy status (docs/design/policy.md §6): the controller
// serves the RBAC of pods whose policies need HTTP facts on their nodes'
// inbound listeners (§7.2); the agents enforce the rest in eBPF. It sees
// the whole cluster, so it says for each policy where it runs and what it
// denies more, as Events on the policy — `kubectl describe
// authorizationpolicy` is where users look.
//
// Istio may be installed without its security CRDs, or after nodemesh; the
// xDS side must not wait for a kind that may never come. The informer is
// started apart from the others once discovery shows the kind, and its
// first list is reported when it has synced.

// Event reasons of AuthorizationPolicy status. They and the messages'
// shapes are an API: users and scripts read them with kubectl.
const (
	// ReasonEnforced (Normal): nodemesh enforces the policy, in eBPF on the
	// nodes named, for some pods.
	ReasonEnforced = "Enforced"
	// ReasonNotEnforced (Normal): AUDIT or dry run on meshed pods: nothing
	// is decided.
	ReasonNotEnforced = "NotEnforced"
	// ReasonLeftToSidecars (Normal): every pod it applies to in the mesh
	// still has its sidecar.
	ReasonLeftToSidecars = "LeftToSidecars"
	// ReasonOutsideMesh (Normal): it applies only to pods outside the mesh,
	// which nobody authorizes (as in Istio).
	ReasonOutsideMesh = "OutsideMesh"
	// ReasonNoPods (Normal): it applies to no pod.
	ReasonNoPods = "NoPods"
	// ReasonDeniesMore (Warning): part of it cannot be enforced exactly
	// and denies more (ir.CodeDeniesMore); translation errors keep their
	// own codes as reasons.
	ReasonDeniesMore = string(ir.CodeDeniesMore)
)

// authzKind is the kind of the policies' Events and diagnostics.
const authzKind = "AuthorizationPolicy"

// authzDiscoveryPeriod is how often discovery is asked while the kind is
// not served (the agent's period).
const authzDiscoveryPeriod = 30 * time.Second

// maxNodesNamed bounds the node list of a message.
const maxNodesNamed = 5

// authzServed reports whether the API server serves a security.istio.io/v1
// resource (authorizationpolicies, peerauthentications).
func (c *Controller) authzServed(resource string) (bool, error) {
	list, err := c.kube.Discovery().ServerResourcesForGroupVersion(securityv1.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", securityv1.SchemeGroupVersion, err)
	}
	for _, r := range list.APIResources {
		if r.Name == resource {
			return true, nil
		}
	}
	return false, nil
}

// watchAuthz watches AuthorizationPolicies and PeerAuthentications, each
// once its kind is served; authzStarted: Run already started the
// AuthorizationPolicy informer (the kind was served at start);
// peerAuthnStarted likewise for PeerAuthentications (with Istio mTLS).
func (c *Controller) watchAuthz(ctx context.Context, authzStarted, peerAuthnStarted bool) {
	// With Istio mTLS, PeerAuthentications decide the mode of the inbound
	// listeners' mTLS termination: a full translation; otherwise only
	// their status.
	if !peerAuthnStarted {
		go c.watchSecurity(ctx, "peerauthentications", peerAuthnKind, c.peerAuthnInformer, &c.src.peerAuthn, c.opts.Istio.IstioMTLS)
	}
	// RequestAuthentications decide the jwt_authn filter of the inbound
	// listeners: a full translation.
	go c.watchSecurity(ctx, "requestauthentications", "RequestAuthentication", c.reqAuthnInformer, &c.src.reqAuthn, true)
	if !authzStarted {
		c.watchSecurity(ctx, "authorizationpolicies", authzKind, c.authzInformer, &c.src.authz, true)
	}
}

func (c *Controller) authzInformer() cache.SharedIndexInformer {
	return c.src.istio.Security().V1().AuthorizationPolicies().Informer()
}

func (c *Controller) reqAuthnInformer() cache.SharedIndexInformer {
	return c.src.istio.Security().V1().RequestAuthentications().Informer()
}

func (c *Controller) peerAuthnInformer() cache.SharedIndexInformer {
	return c.src.istio.Security().V1().PeerAuthentications().Informer()
}

// watchSecurity waits for the kind to be served, starts its informer and
// reports the policies once it has listed them; from then on every change
// of a policy is a change to report.
func (c *Controller) watchSecurity(ctx context.Context, resource, kind string, informer func() cache.SharedIndexInformer,
	store *atomic.Pointer[cache.SharedIndexInformer], full bool) {
	for {
		ok, err := c.authzServed(resource)
		if err != nil {
			c.log.Warn(kind+" discovery failed; retrying", "error", err)
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.opts.AuthzDiscoveryPeriod):
		}
	}
	if c.startSecurity(ctx, kind, informer, store, full) {
		c.enqueue(change{authz: true, full: full, first: time.Now(), events: 1})
	}
}

// startAuthz starts the AuthorizationPolicy informer and waits for its
// first list (false: ctx ended, or the informer could not be set up). Run
// calls it before the first translation when the kind is served at start,
// so that a restarted controller never serves nodes without their inbound
// listeners (the agent syncs its policies the same way).
func (c *Controller) startAuthz(ctx context.Context) bool {
	return c.startSecurity(ctx, authzKind, c.authzInformer, &c.src.authz, true)
}

// startSecurity starts a security.istio.io informer and waits for its
// first list. full: a change of the kind needs a full translation (an
// AuthorizationPolicy decides the inbound listeners of the nodes of the
// pods it applies to; policies change seldom); otherwise only the status
// Events are out of date.
func (c *Controller) startSecurity(ctx context.Context, kind string, informer func() cache.SharedIndexInformer,
	store *atomic.Pointer[cache.SharedIndexInformer], full bool) bool {
	inf := informer()
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, r *cache.Reflector, err error) {
		c.log.Warn("watch failed; retrying", "reflector", r.TypeDescription(), "error", err)
	})
	report := func() { c.enqueue(change{authz: true, full: full, first: time.Now(), events: 1}) }
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(_ any, initial bool) {
			if !initial {
				report()
			}
		},
		UpdateFunc: func(o, n any) {
			if o.(metav1.Object).GetResourceVersion() != n.(metav1.Object).GetResourceVersion() {
				report()
			}
		},
		DeleteFunc: func(any) { report() },
	}); err != nil {
		c.log.Error(kind+" informer", "error", err)
		return false
	}
	c.src.istio.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return false
	}
	store.Store(&inf)
	c.log.Info("watching " + kind + "s")
	return true
}

// reportAuthz works out every policy's status and reports what changed.
func (c *Controller) reportAuthz() {
	var evs []authzEvent
	if inf := c.src.authzInformer(); inf != nil {
		var aps []*securityv1.AuthorizationPolicy
		for _, o := range inf.GetStore().List() {
			aps = append(aps, o.(*securityv1.AuthorizationPolicy))
		}
		sts, diags := translate.AuthorizationStatus(c.src.bag(), aps, c.opts.Authz)
		evs = authzEvents(sts, diags)
	}
	if inf := c.src.peerAuthnInformer(); inf != nil {
		var pas []*securityv1.PeerAuthentication
		for _, o := range inf.GetStore().List() {
			pas = append(pas, o.(*securityv1.PeerAuthentication))
		}
		sts, diags := translate.PeerAuthenticationStatus(c.src.bag(), pas, c.opts.Authz.RootNamespace)
		evs = append(evs, peerAuthnEvents(sts, diags)...)
	}
	if evs == nil && c.src.authzInformer() == nil && c.src.peerAuthnInformer() == nil {
		return
	}
	c.rep.authz(evs)
}

// authzEvent is one Event about a policy.
type authzEvent struct {
	ref                  ir.ResourceRef
	typ, reason, message string
}

// authzEvents are the Events that describe the policies' status: where
// each runs, each degradation where it applies, each translation
// diagnostic.
func authzEvents(sts []translate.AuthzStatus, diags ir.Diagnostics) []authzEvent {
	var out []authzEvent
	for _, st := range sts {
		p := st.Policy
		ev := func(typ, reason, msg string) {
			out = append(out, authzEvent{ref: p.Source, typ: typ, reason: reason, message: msg})
		}
		var parts []string
		reason := ReasonEnforced
		switch {
		case st.Nodemesh > 0:
			where := "enforced in eBPF for " + pods(st.Nodemesh) + onNodes(st.Nodes)
			switch {
			case p.Action == ir.PolicyAudit:
				reason, where = ReasonNotEnforced, "AUDIT decides nothing and nodemesh logs no audit records yet: "+pods(st.Nodemesh)+onNodes(st.Nodes)
			case p.DryRun:
				reason, where = ReasonNotEnforced, "dry run (istio.io/dry-run): nothing enforced for "+pods(st.Nodemesh)+onNodes(st.Nodes)
			}
			parts = append(parts, where)
		case st.Sidecar > 0:
			reason = ReasonLeftToSidecars
		case st.None > 0:
			reason = ReasonOutsideMesh
		default:
			reason = ReasonNoPods
			parts = append(parts, "no pod selected")
		}
		if st.Sidecar > 0 {
			parts = append(parts, "left to the sidecars of "+pods(st.Sidecar))
		}
		if st.None > 0 {
			parts = append(parts, pods(st.None)+" outside the mesh: nobody authorizes them")
		}
		ev(corev1.EventTypeNormal, reason, strings.Join(parts, "; "))

		for _, d := range p.Degradations {
			ev(corev1.EventTypeWarning, ReasonDeniesMore, d.Diagnostic.Field+": "+d.Diagnostic.Message)
		}
		for _, r := range st.Rules {
			for _, d := range r.DeniesMore {
				msg := d.Field + ": " + d.Message
				if r.Projected {
					// The projection is what the agents enforce on ports
					// not captured into the node Envoy (HTTP ports are:
					// its RBAC enforces the rule exactly), and only where
					// the policy has meshed pods.
					if st.Nodemesh == 0 {
						continue
					}
					msg = d.Field + ": runs as its L4 projection in eBPF (no node Envoy RBAC yet): " + d.Message
				}
				ev(corev1.EventTypeWarning, ReasonDeniesMore, msg)
			}
		}
	}
	for _, d := range diags {
		if d.Resource.Kind != authzKind {
			continue
		}
		typ := corev1.EventTypeWarning
		if d.Severity == ir.SeverityInfo {
			typ = corev1.EventTypeNormal
		}
		msg := d.Message
		if d.Field != "" {
			msg = d.Field + ": " + msg
		}
		out = append(out, authzEvent{ref: d.Resource, typ: typ, reason: string(d.Code), message: msg})
	}
	return out
}

func pods(n int) string {
	if n == 1 {
		return "1 pod"
	}
	return fmt.Sprintf("%d pods", n)
}

func onNodes(nodes []string) string {
	switch {
	case len(nodes) == 0:
		return " (not scheduled yet)"
	case len(nodes) == 1:
		return " on node " + nodes[0]
	case len(nodes) > maxNodesNamed:
		return fmt.Sprintf(" on nodes %s and %d more", strings.Join(nodes[:maxNodesNamed], ", "), len(nodes)-maxNodesNamed)
	}
	return " on nodes " + strings.Join(nodes, ", ")
}
