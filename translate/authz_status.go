package translate

import (
	"slices"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// Where an AuthorizationPolicy runs (docs/design/policy.md §6, §7.1): the
// same answers for `nodemesh authz check` (one pod) and the controller's
// Events (one policy, every pod it applies to).

// Authorizer is who authorizes a pod's inbound requests.
type Authorizer string

const (
	// AuthorizedByNodemesh: a meshed pod (opted-in namespace not injected
	// with sidecars, no sidecar, not opted out, not on the host network);
	// the agent enforces the L4 part in eBPF.
	AuthorizedByNodemesh Authorizer = "nodemesh"
	// AuthorizedBySidecar: the pod has Istio's proxy, nodemesh leaves its
	// authorization to it until the pod moves.
	AuthorizedBySidecar Authorizer = "sidecar"
	// AuthorizedByNone: outside the mesh; as in Istio, nobody authorizes
	// requests to it.
	AuthorizedByNone Authorizer = "none"
)

// AuthorizerOf says who authorizes a pod, given its namespace's labels. It
// is the agent's own rule (agent/sync.go redirected, policy.Endpoint.Meshed):
// a status that claimed eBPF enforcement for a pod the agent leaves alone
// would be a lie users act on.
func AuthorizerOf(pod *input.Pod, nsLabels map[string]string) Authorizer {
	switch {
	case pod.Sidecar:
		return AuthorizedBySidecar
	case !authz.Meshed(workload(pod), nsLabels):
		return AuthorizedByNone
	}
	return AuthorizedByNodemesh
}

// AuthzRule is how one rule of a policy is enforced on the pods an
// Authorizer authorizes.
type AuthzRule struct {
	Field string
	Layer ir.PolicyLayer
	// Decides is false for AUDIT and dry-run rules: they change no
	// decision.
	Decides bool
	// Projected: the rule has request facts and nodemesh runs it as its L4
	// projection in eBPF (the node Envoy's inbound RBAC is not placed yet):
	// an ALLOW never matches, a DENY ignores its request facts.
	Projected bool
	// DeniesMore are the rule's degradations as enforced: what cannot be
	// evaluated exactly and how it errs towards denying.
	DeniesMore []ir.Diagnostic
}

// AuthzRules is how each rule of a policy is enforced for pods by.
func AuthzRules(p *ir.Policy, by Authorizer) []AuthzRule {
	out := make([]AuthzRule, 0, len(p.Rules))
	for _, r := range p.Rules {
		ar := AuthzRule{Field: r.Field, Layer: r.Layer(), Decides: p.Action != ir.PolicyAudit && !p.DryRun}
		degs := r.Degradations
		if ar.Decides && ar.Layer == ir.LayerL7 && by == AuthorizedByNodemesh {
			// The projection keeps the rule's own degradations and adds
			// what dropping the request facts does.
			ar.Projected = true
			degs = ir.ProjectL4(p.Action, p.Source, r).Degradations
		}
		for _, d := range degs {
			ar.DeniesMore = append(ar.DeniesMore, d.Diagnostic)
		}
		out = append(out, ar)
	}
	return out
}

// AuthzStatus is where one policy runs across the cluster.
type AuthzStatus struct {
	Policy *ir.Policy
	// Nodemesh counts the pods nodemesh authorizes that the policy applies
	// to, on Nodes (sorted; pods not scheduled yet name no node).
	Nodemesh int
	Nodes    []string
	// Sidecar and None count the pods left to their sidecars and the pods
	// outside the mesh.
	Sidecar, None int
	// Rules as enforced on the Nodemesh pods (AuthzRules).
	Rules []AuthzRule
}

// AuthorizationStatus translates AuthorizationPolicies and works out, for
// each, the pods of the bag it applies to and who authorizes them. The
// diagnostics are the translation's (a policy left out has no status, only
// its diagnostics). Pods that have completed are not counted: they receive
// nothing.
func AuthorizationStatus(bag *Bag, aps []*securityv1.AuthorizationPolicy, opts AuthzOptions) ([]AuthzStatus, ir.Diagnostics) {
	pols, diags := istio.AuthorizationPolicies(aps, opts)
	nsLabels := map[string]map[string]string{}
	for _, n := range bag.Namespaces {
		nsLabels[n.Name] = n.Labels
	}
	byNS := map[string][]*input.Pod{}
	for _, p := range bag.Pods {
		if p.Phase == corev1.PodSucceeded || p.Phase == corev1.PodFailed {
			continue
		}
		byNS[p.Namespace] = append(byNS[p.Namespace], p)
	}
	out := make([]AuthzStatus, 0, len(pols))
	for i := range pols {
		p := &pols[i]
		st := AuthzStatus{Policy: p, Rules: AuthzRules(p, AuthorizedByNodemesh)}
		applies := appliesFunc(p, bag.Services)
		nodes := map[string]bool{}
		count := func(pod *input.Pod) {
			if !applies(pod) {
				return
			}
			switch AuthorizerOf(pod, nsLabels[pod.Namespace]) {
			case AuthorizedByNodemesh:
				st.Nodemesh++
				if pod.NodeName != "" {
					nodes[pod.NodeName] = true
				}
			case AuthorizedBySidecar:
				st.Sidecar++
			default:
				st.None++
			}
		}
		if p.Scope.Namespace != "" {
			for _, pod := range byNS[p.Scope.Namespace] {
				count(pod)
			}
		} else {
			for _, pods := range byNS {
				for _, pod := range pods {
					count(pod)
				}
			}
		}
		for n := range nodes {
			st.Nodes = append(st.Nodes, n)
		}
		slices.Sort(st.Nodes)
		out = append(out, st)
	}
	return out, diags
}

// AppliesTo reports whether an authorization policy applies to a pod's
// inbound traffic: the pod is in the policy's namespace (any namespace for
// a policy of the root namespace), has the labels of its selector, and,
// with targetRefs, is selected by one of the named Services of its
// namespace. The controller uses it to place each pod's RBAC on the
// inbound listener of the pod's node.
func AppliesTo(p *ir.Policy, pod *input.Pod, services []*corev1.Service) bool {
	return appliesFunc(p, services)(pod)
}

// appliesFunc is AppliesTo for many pods: the selector is parsed once.
func appliesFunc(p *ir.Policy, services []*corev1.Service) func(pod *input.Pod) bool {
	applies := authz.Applies(p, services)
	return func(pod *input.Pod) bool { return applies(pod.Namespace, pod.Labels) }
}
