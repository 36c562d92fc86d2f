package istio

import (
	"cmp"
	"slices"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// vsInfo is a VirtualService that applies to the mesh, after validation.
type vsInfo struct {
	obj       *networkingv1.VirtualService
	ref       ir.ResourceRef
	namespace string
	// hosts are the resolved hosts, in order.
	hosts []string
	// badHTTP and badTCP mark rules that failed validation; they are left out.
	badHTTP map[int]bool
	badTCP  map[int]bool
	// exportTo is the resolved exportTo (or the mesh default).
	exportTo exportSet
	// rules, when delegation replaced rules of a root, say where each rule
	// of obj.Spec.Http came from (delegate.go); nil otherwise.
	rules []httpRule
}

// indexVirtualServices validates the VirtualServices that apply to the mesh
// and reports hosts that match no Service. Which VirtualService routes a
// Service depends on the client's namespace (exportTo): vsFor.
func (t *translator) indexVirtualServices() {
	objs := slices.Clone(t.bag.VirtualServices)
	slices.SortStableFunc(objs, func(a, b *networkingv1.VirtualService) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Namespace, b.Namespace))
	})
	t.vsByNamespace = map[string]map[*service]*vsInfo{}
	for _, obj := range objs {
		vs := t.validateVirtualService(obj)
		if vs == nil {
			continue
		}
		t.vss = append(t.vss, vs)
		for i, h := range vs.hosts {
			if len(t.servicesMatching(h)) > 0 {
				continue
			}
			field := ir.Path("spec.hosts").Index(i)
			if se, ok := t.externalHost(h); ok {
				// Istio would add a virtual host of its own for it;
				// nodemesh routes the entry's host as declared.
				t.diags.Warnf(ir.CodeUnsupportedField, vs.ref, string(field),
					"host %q is only covered by the wildcard host %q of %s; routes for a narrower host than an entry declares are not served yet (the wildcard host keeps its default route)", h, se.fqdn, se.ref)
			} else {
				t.diags.Warnf(ir.CodeHostNotFound, vs.ref, string(field), "host %q matches no Service; it is ignored", h)
			}
		}
	}
	// Roots' delegating rules are replaced by their delegates' before any
	// client's view (vsFor) reads them.
	t.mergeDelegates()
}

// vsFor assigns each Service at most one VirtualService for the clients of
// a namespace: among those the namespace sees, the one whose host matches
// most specifically, and among equals the first in Istio's order
// (PushContext.VirtualServicesForGateway: the namespace's own private ones,
// then those exported to it by name, then public ones, each oldest first —
// Istio keeps the first virtual host of a name and drops later duplicates).
// The default class (no namespace) sees public VirtualServices only.
func (t *translator) vsFor(clientNamespace string) map[*service]*vsInfo {
	if m, ok := t.vsByNamespace[clientNamespace]; ok {
		return m
	}
	var private, exported, public []*vsInfo
	for _, vs := range t.vss {
		switch {
		case vs.exportTo.public():
			public = append(public, vs)
		case clientNamespace == "" || !vs.exportTo.visibleTo(clientNamespace):
		case vs.namespace == clientNamespace:
			private = append(private, vs)
		default:
			exported = append(exported, vs)
		}
	}
	type claim struct {
		vs          *vsInfo
		specificity int
		field       ir.Path
	}
	claims := map[*service]claim{}
	for _, vs := range slices.Concat(private, exported, public) {
		for i, h := range vs.hosts {
			field := ir.Path("spec.hosts").Index(i)
			for _, s := range t.servicesMatching(h) {
				sp := hostSpecificity(h)
				prev, claimed := claims[s]
				switch {
				case !claimed || sp > prev.specificity:
					if claimed {
						t.conflict(prev.vs, prev.field, s, vs)
					}
					claims[s] = claim{vs, sp, field}
				case prev.vs != vs:
					t.conflict(vs, field, s, prev.vs)
				}
			}
		}
	}
	m := make(map[*service]*vsInfo, len(claims))
	for s, c := range claims {
		m[s] = c.vs
	}
	t.vsByNamespace[clientNamespace] = m
	return m
}

// servicesMatching lists the Services a (possibly wildcard) host names.
func (t *translator) servicesMatching(host string) []*service {
	if !isWildcard(host) {
		if s := t.services[host]; s != nil {
			return []*service{s}
		}
		return nil
	}
	var out []*service
	for _, s := range t.serviceList {
		if hostMatches(s.fqdn, host) {
			out = append(out, s)
		}
	}
	return out
}

func (t *translator) conflict(loser *vsInfo, field ir.Path, s *service, winner *vsInfo) {
	t.diags.Warnf(ir.CodeConflict, loser.ref, string(field),
		"%s is also claimed by %s, which takes precedence (more specific host, or older); this VirtualService does not apply to it",
		s.fqdn, winner.ref)
}
