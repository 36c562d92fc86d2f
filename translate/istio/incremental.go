package istio

import (
	"maps"
	"slices"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// WithEndpoints is the translation of bag, which differs from the input p
// was prepared from only in the endpoints of some Services (their
// EndpointSlices, or the readiness of their Pods): only those Services'
// assignments are recomputed, and everything else — listener, route
// configurations, clusters, source classes already computed — is shared
// with p. services are "namespace/name" keys. changed are the recomputed
// assignments (next.Base.Endpoints holds every assignment unless p was
// compacted).
//
// Keys of Services that do not exist are skipped: their endpoints serve
// nothing. ok is false when the shortcut does not apply and bag must be
// translated from scratch: a key without a Service name (an EndpointSlice
// without its kubernetes.io/service-name label, which a full translation
// reports), or a headless Service (its endpoints are the addresses its
// filter chains match). p is not modified; like p, the result is not safe
// for concurrent use.
func (p *Prepared) WithEndpoints(bag *input.Bag, services []string) (next *Prepared, changed []ir.ClusterEndpoints, ok bool) {
	t := p.t
	affected := make([]*service, 0, len(services))
	for _, key := range services {
		ns, name, found := strings.Cut(key, "/")
		if !found || ns == "" || name == "" {
			return nil, nil, false
		}
		s := t.services[ir.ServiceFQDN(name, ns, t.opts.ClusterDomain)]
		if s == nil || s.name != name || s.namespace != ns {
			continue
		}
		if s.headless {
			return nil, nil, false
		}
		affected = append(affected, s)
	}
	t2 := *t
	t2.bag = bag
	t2.diags = slices.Clone(t.diags)
	t2.drMemo = maps.Clone(t.drMemo)
	t2.vsByNamespace = maps.Clone(t.vsByNamespace)
	t2.endpoints = maps.Clone(t.endpoints)
	t2.epDiags = maps.Clone(t.epDiags)

	// The inputs of the affected Services' endpoints.
	wanted := map[string]bool{}
	for _, s := range affected {
		wanted[s.namespace+"/"+s.name] = true
	}
	slicesBySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, es := range bag.EndpointSlices {
		if key := es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]; wanted[key] {
			slicesBySvc[key] = append(slicesBySvc[key], es)
		}
	}
	pods := map[string]*input.Pod{}
	index := podIndex{keys: map[string]bool{}, pods: map[podLabel][]*input.Pod{}}
	namespaces := map[string]bool{}
	for _, s := range affected {
		namespaces[s.namespace] = true
		for k := range s.selector {
			index.keys[k] = true
		}
	}
	for _, pod := range bag.Pods {
		if namespaces[pod.Namespace] {
			pods[pod.Namespace+"/"+pod.Name] = pod
			index.add(pod)
		}
	}

	m := *p.Base
	m.Endpoints = slices.Clone(p.Base.Endpoints) // nil when compacted
	at := p.endpointIndex()
	for _, s := range affected {
		eps, diags := t2.serviceEndpoints(s, slicesBySvc[s.namespace+"/"+s.name], pods, index)
		if t.opts.IstioMTLS && !slices.Equal(accountsOf(t.opts.TrustDomain, eps), accountsOf(t.opts.TrustDomain, t.endpoints[s])) {
			// The clusters' SANs (the pods' identities) changed: the
			// clusters change, not only their endpoints.
			return nil, nil, false
		}
		t2.endpoints[s] = eps
		t2.epDiags[s] = diags
		t2.noEndpoints(s)
		variants := append([]drVariant{{dr: t2.destinationRule(s, "")}}, t.variants[s]...)
		for _, port := range s.ports {
			type named struct {
				ss  *subsetInfo
				tag string
			}
			var subsets []named
			for _, v := range variants {
				subsets = append(subsets, named{nil, v.tag})
				if v.dr != nil {
					for _, ss := range v.dr.subsets {
						subsets = append(subsets, named{ss, v.tag})
					}
				}
			}
			for _, n := range subsets {
				ss, subset := n.ss, ""
				if ss != nil {
					subset = ss.name
				}
				name := ir.OutboundClusterName(port.port, subset+n.tag, s.fqdn)
				i, ok := at[name]
				if !ok {
					continue // not an EDS cluster
				}
				ce := t2.clusterEndpoints(s, name, port.port, ss)
				if m.Endpoints != nil {
					m.Endpoints[i] = ce
				}
				changed = append(changed, ce)
			}
		}
		if len(t2.epDiags[s]) == 0 {
			delete(t2.epDiags, s)
		}
	}
	next = &Prepared{t: &t2, Base: &m, sourceLabels: p.sourceLabels, classes: maps.Clone(p.classes), endpointAt: at,
		routingNamespaces: p.routingNamespaces, exactClasses: p.exactClasses, baseRoutes: p.baseRoutes, mtls: p.mtls}
	return next, changed, true
}

// endpointIndex maps cluster names to their position in Base.Endpoints.
func (p *Prepared) endpointIndex() map[string]int {
	if p.endpointAt == nil {
		p.endpointAt = make(map[string]int, len(p.Base.Endpoints))
		for i, ce := range p.Base.Endpoints {
			p.endpointAt[ce.Cluster] = i
		}
	}
	return p.endpointAt
}
