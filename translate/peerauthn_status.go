package translate

import (
	"slices"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// PeerAuthnStatus is where one PeerAuthentication decides something: the
// pods whose effective mode (of some port) it sets, by who enforces it —
// the same rule as AuthorizationPolicy (AuthorizerOf: the agent enforces
// PeerAuthentication on the pods it authorizes).
type PeerAuthnStatus struct {
	Policy ir.ResourceRef
	// Nodemesh, Sidecar, None count the pods it decides for by
	// authenticator; Strict those of Nodemesh with a STRICT port from it.
	Nodemesh, Sidecar, None, Strict int
	// Nodes are the nodes of the Nodemesh pods, sorted.
	Nodes []string
}

// PeerAuthenticationStatus works out every PeerAuthentication's status
// with istiod's precedence (translate/authz), and what istiod would ignore
// of them as diagnostics. Completed pods are not counted.
func PeerAuthenticationStatus(bag *Bag, pas []*securityv1.PeerAuthentication, rootNamespace string) ([]PeerAuthnStatus, ir.Diagnostics) {
	idx := authz.NewPeerAuthentications(pas, rootNamespace, nil)
	nsLabels := map[string]map[string]string{}
	for _, n := range bag.Namespaces {
		nsLabels[n.Name] = n.Labels
	}
	byRef := map[ir.ResourceRef]*PeerAuthnStatus{}
	nodes := map[ir.ResourceRef]map[string]bool{}
	for _, pa := range pas {
		if pa == nil {
			continue
		}
		ref := ir.ResourceRef{Kind: authz.PeerAuthnKind, Namespace: pa.Namespace, Name: pa.Name}
		byRef[ref], nodes[ref] = &PeerAuthnStatus{Policy: ref}, map[string]bool{}
	}
	for _, pod := range bag.Pods {
		if pod.Phase == corev1.PodSucceeded || pod.Phase == corev1.PodFailed {
			continue
		}
		eff := idx.For(pod.Namespace, pod.Labels)
		by := AuthorizerOf(pod, nsLabels[pod.Namespace])
		strict := map[ir.ResourceRef]bool{}
		settings := []authz.PeerAuthnSetting{eff.Workload}
		for _, p := range eff.SortedPorts() {
			settings = append(settings, eff.Ports[p])
		}
		for _, s := range settings {
			if _, ok := strict[s.From]; !ok || s.Mode == authz.ModeStrict {
				strict[s.From] = s.Mode == authz.ModeStrict
			}
		}
		for ref, isStrict := range strict {
			st := byRef[ref]
			if st == nil {
				continue // the default, or a policy the caller did not list
			}
			switch by {
			case AuthorizedByNodemesh:
				st.Nodemesh++
				if isStrict {
					st.Strict++
				}
				if pod.NodeName != "" {
					nodes[ref][pod.NodeName] = true
				}
			case AuthorizedBySidecar:
				st.Sidecar++
			default:
				st.None++
			}
		}
	}
	out := make([]PeerAuthnStatus, 0, len(byRef))
	for ref, st := range byRef {
		for n := range nodes[ref] {
			st.Nodes = append(st.Nodes, n)
		}
		slices.Sort(st.Nodes)
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b PeerAuthnStatus) int { return a.Policy.Compare(b.Policy) })
	return out, idx.Diagnostics
}
