package istio

import (
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// AuthzOptions tune the AuthorizationPolicy translation (root namespace,
// trust domain and its aliases).
type AuthzOptions = authz.Options

// DryRunAnnotation turns an AuthorizationPolicy's rules into shadow rules.
const DryRunAnnotation = authz.DryRunAnnotation

// AuthorizationPolicies translates Istio AuthorizationPolicies into the
// policy model. The translation lives in translate/authz, which the agent
// imports too (it computes the L4 part of the policies itself); this is the
// translator's entry to it.
func AuthorizationPolicies(aps []*securityv1.AuthorizationPolicy, opts AuthzOptions) ([]ir.Policy, ir.Diagnostics) {
	return authz.AuthorizationPolicies(aps, opts)
}
