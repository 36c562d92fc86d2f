package istio

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// endpoint is one ready backend of a Service.
type endpoint struct {
	address string
	labels  map[string]string
	node    string
	zone    string
	pod     string // namespace/name
	// account is the pod's service account (its Istio identity), "" when
	// the endpoint names no known pod; sidecar says the pod accepts Istio
	// mTLS (input.Pod.AcceptsIstioMTLS).
	account string
	sidecar bool
	// ports maps Service port numbers to the backend's ports.
	ports portMap
	// weight is a ServiceEntry endpoint's weight (0: unset).
	weight uint32
}

// portMap maps Service ports to backend ports; Services have few ports, so a
// slice beats a map.
type portMap []portPair

type portPair struct{ service, backend uint32 }

func (m portMap) get(service uint32) (uint32, bool) {
	for _, p := range m {
		if p.service == service {
			return p.backend, true
		}
	}
	return 0, false
}

func (m *portMap) set(service, backend uint32) {
	for i := range *m {
		if (*m)[i].service == service {
			(*m)[i].backend = backend
			return
		}
	}
	*m = append(*m, portPair{service, backend})
}

// indexEndpoints fills every Service's endpoints: from its EndpointSlices when
// the input has any, otherwise from the Pods its selector picks (so plain
// manifests translate). Only ready endpoints are kept, as Istio does by default.
func (t *translator) indexEndpoints() {
	// Index Pods only by the label keys some selector uses.
	index := podIndex{keys: map[string]bool{}, pods: map[podLabel][]*input.Pod{}}
	for _, s := range t.serviceList {
		for k := range s.selector {
			index.keys[k] = true
		}
	}
	for _, p := range t.bag.Pods {
		index.add(p)
	}
	var pods map[string]*input.Pod // namespace/name, for EndpointSlice targetRefs
	if len(t.bag.EndpointSlices) > 0 {
		pods = make(map[string]*input.Pod, len(t.bag.Pods))
		for _, p := range t.bag.Pods {
			pods[p.Namespace+"/"+p.Name] = p
		}
	}
	slicesBySvc := map[string][]*discoveryv1.EndpointSlice{} // namespace/service
	for _, es := range t.bag.EndpointSlices {
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			t.diags.Warnf(ir.CodeInvalidValue, ir.ResourceRef{Kind: "EndpointSlice", Namespace: es.Namespace, Name: es.Name},
				"metadata.labels", "EndpointSlice has no %s label; ignored", discoveryv1.LabelServiceName)
			continue
		}
		slicesBySvc[es.Namespace+"/"+svc] = append(slicesBySvc[es.Namespace+"/"+svc], es)
	}
	t.endpoints = make(map[*service][]*endpoint, len(t.serviceList))
	t.epDiags = map[*service]ir.Diagnostics{}
	for _, s := range t.serviceList {
		eps, diags := t.serviceEndpoints(s, slicesBySvc[s.namespace+"/"+s.name], pods, index)
		t.endpoints[s] = eps
		if len(diags) > 0 {
			t.epDiags[s] = diags
		}
	}
}

// serviceEndpoints computes a Service's endpoints: from its EndpointSlices
// when it has any, otherwise from the Pods its selector picks.
func (t *translator) serviceEndpoints(s *service, ess []*discoveryv1.EndpointSlice, pods map[string]*input.Pod, index podIndex) ([]*endpoint, ir.Diagnostics) {
	var eps []*endpoint
	var diags ir.Diagnostics
	if s.entry != nil {
		eps = t.entryEndpoints(s, index)
	} else if len(ess) > 0 {
		eps = endpointsFromSlices(s, ess, pods, &diags)
	} else if len(s.selector) > 0 {
		eps = endpointsFromPods(s, index.candidates(s.namespace, s.selector))
	}
	slices.SortFunc(eps, func(a, b *endpoint) int { return cmp.Or(cmp.Compare(a.address, b.address), cmp.Compare(a.pod, b.pod)) })
	return eps, diags
}

func endpointsFromSlices(s *service, ess []*discoveryv1.EndpointSlice, pods map[string]*input.Pod, diags *ir.Diagnostics) []*endpoint {
	var out []*endpoint
	// A Pod appears in one slice per port set; merge its ports. Distinct
	// Pods sharing an address (host-network Pods) stay distinct.
	type key struct{ pod, addr string }
	seen := map[key]*endpoint{}
	for _, es := range ess {
		if es.AddressType == discoveryv1.AddressTypeFQDN {
			diags.Warnf(ir.CodeUnsupportedField, ir.ResourceRef{Kind: "EndpointSlice", Namespace: es.Namespace, Name: es.Name},
				"addressType", "FQDN EndpointSlices are not supported; ignored")
			continue
		}
		// Map the slice's ports to the Service's by name.
		var slicePorts portMap
		for _, sp := range s.ports {
			for _, ep := range es.Ports {
				name := ""
				if ep.Name != nil {
					name = *ep.Name
				}
				if name == sp.name && ep.Port != nil {
					slicePorts.set(sp.port, uint32(*ep.Port))
				}
			}
		}
		for _, e := range es.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			var lbls map[string]string
			pod, account, sidecar := "", "", false
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				ns := e.TargetRef.Namespace
				if ns == "" {
					ns = es.Namespace
				}
				pod = ns + "/" + e.TargetRef.Name
				if p := pods[pod]; p != nil {
					lbls = p.Labels
					account, sidecar = p.IdentityAccount(), p.AcceptsIstioMTLS()
				}
			}
			node := ""
			if e.NodeName != nil {
				node = *e.NodeName
			}
			zone := ""
			if e.Zone != nil {
				zone = *e.Zone
			}
			for _, addr := range e.Addresses {
				if prev := seen[key{pod, addr}]; prev != nil {
					for _, p := range slicePorts {
						prev.ports.set(p.service, p.backend)
					}
					continue
				}
				ep := &endpoint{address: addr, labels: lbls, node: node, zone: zone, pod: pod, account: account, sidecar: sidecar, ports: slices.Clone(slicePorts)}
				seen[key{pod, addr}] = ep
				out = append(out, ep)
			}
		}
	}
	return out
}

// podIndex finds the Pods a selector may pick without scanning a whole
// namespace: Pods are indexed by namespace and by each label whose key some
// selector uses.
type podIndex struct {
	keys map[string]bool
	pods map[podLabel][]*input.Pod
}

type podLabel struct{ namespace, key, value string }

func (x podIndex) add(p *input.Pod) {
	for k, v := range p.Labels {
		if x.keys[k] {
			l := podLabel{p.Namespace, k, v}
			x.pods[l] = append(x.pods[l], p)
		}
	}
}

// candidates returns the Pods carrying the selector's rarest label; the
// caller still checks the whole selector.
func (x podIndex) candidates(ns string, selector map[string]string) []*input.Pod {
	var best []*input.Pod
	first := true
	for k, v := range selector {
		c := x.pods[podLabel{ns, k, v}]
		if first || len(c) < len(best) {
			best, first = c, false
		}
	}
	return best
}

func endpointsFromPods(s *service, pods []*input.Pod) []*endpoint {
	var selected []*input.Pod
	n := 0
	sel := newSelector(s.selector)
	for _, p := range pods {
		if sel.matches(p.Labels) && podReady(p) {
			selected = append(selected, p)
			n += len(p.IPs)
		}
	}
	if n == 0 {
		return nil
	}
	// One block for the endpoints and one for their ports: a Service's
	// endpoints are created and dropped together.
	block := make([]endpoint, 0, n)
	portBlock := make(portMap, 0, len(selected)*len(s.ports))
	out := make([]*endpoint, 0, n)
	for _, p := range selected {
		start := len(portBlock)
		for _, sp := range s.ports {
			if tp, ok := resolveTargetPort(sp, p); ok {
				portBlock = append(portBlock, portPair{sp.port, tp})
			}
		}
		ep := endpoint{labels: p.Labels, node: p.NodeName, pod: p.Namespace + "/" + p.Name, account: p.IdentityAccount(), sidecar: p.AcceptsIstioMTLS(),
			ports: portBlock[start:len(portBlock):len(portBlock)]}
		for _, ip := range p.IPs {
			ep.address = ip
			block = append(block, ep)
			out = append(out, &block[len(block)-1])
		}
	}
	return out
}

// podReady: the Pod has an address, is not finished or terminating, and is not
// known to be unready. A Pod written in a manifest without conditions counts as
// ready.
func podReady(p *input.Pod) bool {
	if len(p.IPs) == 0 || p.DeletionTimestamp != nil {
		return false
	}
	if p.Phase == corev1.PodSucceeded || p.Phase == corev1.PodFailed {
		return false
	}
	return p.Ready == "" || p.Ready == corev1.ConditionTrue
}

// resolveTargetPort finds the backend port of a Service port on a Pod.
func resolveTargetPort(sp servicePort, p *input.Pod) (uint32, bool) {
	tp := sp.targetPort
	switch {
	case tp.Type == 0 && tp.IntVal == 0: // unset: same as port
		return sp.port, true
	case tp.Type == 0:
		return uint32(tp.IntVal), true
	}
	port, ok := p.NamedPort(tp.StrVal)
	return uint32(port), ok
}

// subsetEndpoints filters a Service's endpoints by subset labels for a port;
// mtls marks the endpoints of pods that accept Istio mTLS.
func subsetEndpoints(endpoints []*endpoint, port uint32, subsetLabels selector, mtls bool) []ir.Endpoint {
	n := 0
	for _, e := range endpoints {
		if _, ok := e.ports.get(port); ok && subsetLabels.matches(e.labels) {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	out := make([]ir.Endpoint, 0, n)
	for _, e := range endpoints {
		if tp, ok := e.ports.get(port); ok && subsetLabels.matches(e.labels) {
			out = append(out, ir.Endpoint{Address: e.address, Port: tp, Zone: e.zone, Node: e.node, Pod: e.pod, IstioMTLS: mtls && e.sidecar, Weight: e.weight})
		}
	}
	return out
}

// labelsMatch reports whether every selector label is present with its value
// (an equality-based selector; an empty selector matches everything).
func labelsMatch(sel, lbls map[string]string) bool {
	for k, v := range sel {
		if got, ok := lbls[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// selector is an equality-based label selector as a slice: matching it
// against many label sets avoids iterating a map each time.
type selector []labelPair

type labelPair struct{ key, value string }

func newSelector(m map[string]string) selector {
	out := make(selector, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, labelPair{k, m[k]})
	}
	return out
}

func (s selector) matches(lbls map[string]string) bool {
	for _, p := range s {
		if got, ok := lbls[p.key]; !ok || got != p.value {
			return false
		}
	}
	return true
}
