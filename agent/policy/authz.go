package policy

import (
	"encoding/json"
	"fmt"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// KindAuthorizationPolicy is Istio's AuthorizationPolicy.
const KindAuthorizationPolicy = authz.Kind

// AuthzOptions are the mesh settings the AuthorizationPolicy translation
// reads: the root namespace (mesh-wide policies) and the trust domain and
// its aliases.
type AuthzOptions = authz.Options

// DecodeAuthorizationPolicy reads an AuthorizationPolicy (security.istio.io
// v1 or v1beta1: the same schema) from its unstructured form, as the
// dynamic client returns it. The spec is decoded with Istio's own protobuf
// JSON rules.
func DecodeAuthorizationPolicy(obj map[string]any) (*securityv1.AuthorizationPolicy, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode authorization policy: %w", err)
	}
	ap := &securityv1.AuthorizationPolicy{}
	if err := json.Unmarshal(b, ap); err != nil {
		return nil, fmt.Errorf("decode authorization policy: %w", err)
	}
	return ap, nil
}

// AuthorizationPolicyModels translates AuthorizationPolicies into the
// policy model (translate/authz: the translation the controller's Envoy
// RBAC reads too), for Input.Models. The translation's own diagnostics
// (an unknown condition key, an invalid value, CUSTOM) come back as the
// package's diagnostics; what the eBPF back end itself cannot enforce is
// reported by Translate.
func AuthorizationPolicyModels(aps []*securityv1.AuthorizationPolicy, opts AuthzOptions) ([]ir.Policy, []Diagnostic) {
	pols, ds := authz.AuthorizationPolicies(aps, opts)
	var out []Diagnostic
	for _, d := range ds {
		if d.Severity == ir.SeverityInfo {
			continue
		}
		sev := Warning
		if d.Severity == ir.SeverityError {
			sev = Error
		}
		out = append(out, Diagnostic{Severity: sev, Kind: KindAuthorizationPolicy, Namespace: d.Resource.Namespace,
			Name: d.Resource.Name, Field: d.Field, Message: d.Message})
	}
	return pols, out
}
