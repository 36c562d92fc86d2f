package agent

import (
	"fmt"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/agent/policy"
	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Istio's PeerAuthentications: the agent enforces the STRICT ports of its
// meshed pods in the eBPF maps (docs/design/policy.md §10), watching them as
// it watches AuthorizationPolicies (authz.go: discovered, v1 else v1beta1).

// peerAuthentications are the PeerAuthentications for policy.Input (nil
// until the informer has listed them). One that does not decode makes its
// namespace (the mesh, in the root namespace) STRICT on every port: the
// reading that refuses the most.
func (a *Agent) peerAuthentications() (*authz.PeerAuthentications, []policy.Diagnostic) {
	us := a.peerAuthn.listed()
	if us == nil {
		return nil, nil
	}
	var pas []*securityv1.PeerAuthentication
	var bad []ir.ResourceRef
	var diags []policy.Diagnostic
	for _, u := range us {
		pa, err := policy.DecodePeerAuthentication(u.Object)
		if err == nil {
			pas = append(pas, pa)
			continue
		}
		bad = append(bad, ir.ResourceRef{Kind: policy.KindPeerAuthentication, Namespace: u.GetNamespace(), Name: u.GetName()})
		diags = append(diags, policy.Diagnostic{Severity: policy.Error, Kind: policy.KindPeerAuthentication, Namespace: u.GetNamespace(),
			Name: u.GetName(), Field: "spec", Message: fmt.Sprintf("cannot be read (%v): every meshed pod of its namespace is STRICT on every port", err)})
	}
	idx, ds := policy.PeerAuthentications(pas, a.cfg.RootNamespace, bad)
	return idx, append(diags, ds...)
}
