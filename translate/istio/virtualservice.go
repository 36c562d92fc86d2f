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
}

// indexVirtualServices validates the VirtualServices that apply to the mesh
// and assigns each Service at most one of them: the one whose host matches
// most specifically, and among equals the oldest (Istio keeps the first
// virtual host of a name and drops later duplicates).
func (t *translator) indexVirtualServices() {
	objs := slices.Clone(t.bag.VirtualServices)
	slices.SortStableFunc(objs, func(a, b *networkingv1.VirtualService) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Namespace, b.Namespace))
	})
	type claim struct {
		vs          *vsInfo
		specificity int
		field       ir.Path
	}
	claims := map[*service]claim{}
	for _, obj := range objs {
		vs := t.validateVirtualService(obj)
		if vs == nil {
			continue
		}
		t.vss = append(t.vss, vs)
		for i, h := range vs.hosts {
			field := ir.Path("spec.hosts").Index(i)
			matched := false
			for _, s := range t.servicesMatching(h) {
				matched = true
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
			if !matched {
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
	}
	t.vsByService = make(map[*service]*vsInfo, len(claims))
	for s, c := range claims {
		t.vsByService[s] = c.vs
	}
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
