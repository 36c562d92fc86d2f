package translate

import (
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// AuthzOptions are the options of the AuthorizationPolicy translation (root
// namespace, trust domain and its aliases).
type AuthzOptions = istio.AuthzOptions

// RBACFilter is one Envoy RBAC filter of a workload's inbound port.
type RBACFilter = envoy.RBACFilter

// AuthorizationPolicies translates the bag's AuthorizationPolicies (kept by
// a Loader with KeepIgnored, or added by a watcher to Bag.Other) into the
// policy model. Diagnostics about policies read from files carry their
// file and line.
func AuthorizationPolicies(bag *input.Bag, opts AuthzOptions) ([]ir.Policy, ir.Diagnostics) {
	var aps []*securityv1.AuthorizationPolicy
	sources := map[ir.ResourceRef]*input.Source{}
	for _, o := range bag.Other {
		ap, ok := o.Typed.(*securityv1.AuthorizationPolicy)
		if !ok || ap == nil {
			continue
		}
		aps = append(aps, ap)
		if o.Source != nil {
			sources[o.Ref] = o.Source
		}
	}
	pols, diags := istio.AuthorizationPolicies(aps, opts)
	locate(sources, diags)
	for i := range pols {
		locateDegradations(sources, pols[i].Degradations)
		for j := range pols[i].Rules {
			locateDegradations(sources, pols[i].Rules[j].Degradations)
		}
	}
	return pols, diags
}

func locate(sources map[ir.ResourceRef]*input.Source, ds ir.Diagnostics) {
	for i := range ds {
		if src := sources[ds[i].Resource]; src != nil && ds[i].File == "" {
			ds[i].File, ds[i].Line = src.File, src.LineOf(ds[i].Field)
		}
	}
}

func locateDegradations(sources map[ir.ResourceRef]*input.Source, ds []ir.Degradation) {
	for i := range ds {
		d := &ds[i].Diagnostic
		if src := sources[d.Resource]; src != nil && d.File == "" {
			d.File, d.Line = src.File, src.LineOf(d.Field)
		}
	}
}

// BuildRBAC builds the RBAC filters of one workload's inbound port from the
// authorization policies that apply to it: the HTTP filters for an HTTP
// port, the network filters (Istio's TCP semantics) otherwise.
func BuildRBAC(pols []ir.Policy, forTCP bool) ([]RBACFilter, ir.Diagnostics, error) {
	return envoy.BuildRBAC(pols, forTCP)
}

// WorkloadRBAC builds the RBAC filters of one pod's inbound port from the
// authorization policies that apply to it (AppliesTo, with the bag's
// Services): the HTTP filters for an HTTP port, the network filters
// otherwise.
func WorkloadRBAC(pols []ir.Policy, bag *input.Bag, pod *input.Pod, forTCP bool) ([]RBACFilter, ir.Diagnostics, error) {
	var mine []ir.Policy
	for i := range pols {
		if pols[i].Gate == ir.GateAuthorization && AppliesTo(&pols[i], pod, bag.Services) {
			mine = append(mine, pols[i])
		}
	}
	return envoy.BuildRBAC(mine, forTCP)
}
