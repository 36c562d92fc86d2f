package agent

import (
	"encoding/json"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Istio's RequestAuthentications: the node Envoy validates their tokens
// (jwt_authn on its inbound listener, served by the controller), so the
// agent captures the HTTP ports of the pods they apply to, as it does for
// AuthorizationPolicies with HTTP facts (docs/design/policy.md §7.3, §9).
// Only their scopes matter here; they are watched like the other
// security.istio.io kinds (authz.go).

// requestAuthnScopes are the scopes of the RequestAuthentications (none
// until the informer has listed them). One that does not decode is taken
// for its whole namespace (every namespace from the root namespace):
// capturing more only sends more connections through the Envoy, which
// closes those it has no chain for (denies more).
func (a *Agent) requestAuthnScopes() []ir.PolicyScope {
	var out []ir.PolicyScope
	for _, u := range a.reqAuthn.listed() {
		ref := ir.ResourceRef{Kind: "RequestAuthentication", Namespace: u.GetNamespace(), Name: u.GetName()}
		ra := &securityv1.RequestAuthentication{}
		b, err := json.Marshal(u.Object)
		if err == nil {
			err = json.Unmarshal(b, ra)
		}
		if err != nil {
			sc := ir.PolicyScope{}
			if ref.Namespace != a.cfg.RootNamespace {
				sc.Namespace = ref.Namespace
			}
			out = append(out, sc)
			continue
		}
		var diags ir.Diagnostics // the controller reports them (Events)
		sc, _, _, applies := authz.TargetScope(ref, a.cfg.RootNamespace, ra.Spec.GetSelector().GetMatchLabels(),
			ra.Spec.GetTargetRef(), ra.Spec.GetTargetRefs(), &diags)
		if applies {
			out = append(out, sc)
		}
	}
	return out
}
