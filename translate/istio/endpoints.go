package istio

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// endpoint is one ready backend of a Service.
type endpoint struct {
	address string
	labels  map[string]string
	node    string
	zone    string
	pod     string // namespace/name
	// ports maps a Service port number to the backend's port.
	ports map[uint32]uint32
}

// indexEndpoints fills every Service's endpoints: from its EndpointSlices when
// the input has any, otherwise from the Pods its selector picks (so plain
// manifests translate). Only ready endpoints are kept, as Istio does by default.
func (t *translator) indexEndpoints() {
	pods := map[string]*corev1.Pod{} // namespace/name
	podsByNS := map[string][]*corev1.Pod{}
	for _, p := range t.bag.Pods {
		pods[p.Namespace+"/"+p.Name] = p
		podsByNS[p.Namespace] = append(podsByNS[p.Namespace], p)
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
	for _, s := range t.serviceList {
		if ess := slicesBySvc[s.namespace+"/"+s.name]; len(ess) > 0 {
			s.endpoints = t.endpointsFromSlices(s, ess, pods)
		} else if len(s.selector) > 0 {
			s.endpoints = t.endpointsFromPods(s, podsByNS[s.namespace])
		}
		slices.SortFunc(s.endpoints, func(a, b *endpoint) int { return cmp.Compare(a.address, b.address) })
	}
}

func (t *translator) endpointsFromSlices(s *service, ess []*discoveryv1.EndpointSlice, pods map[string]*corev1.Pod) []*endpoint {
	var out []*endpoint
	seen := map[string]*endpoint{}
	for _, es := range ess {
		if es.AddressType == discoveryv1.AddressTypeFQDN {
			t.diags.Warnf(ir.CodeUnsupportedField, ir.ResourceRef{Kind: "EndpointSlice", Namespace: es.Namespace, Name: es.Name},
				"addressType", "FQDN EndpointSlices are not supported; ignored")
			continue
		}
		// Map the slice's ports to the Service's by name.
		portMap := map[uint32]uint32{}
		for _, sp := range s.ports {
			for _, ep := range es.Ports {
				name := ""
				if ep.Name != nil {
					name = *ep.Name
				}
				if name == sp.name && ep.Port != nil {
					portMap[sp.port] = uint32(*ep.Port)
				}
			}
		}
		for _, e := range es.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			var lbls map[string]string
			pod := ""
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				ns := e.TargetRef.Namespace
				if ns == "" {
					ns = es.Namespace
				}
				pod = ns + "/" + e.TargetRef.Name
				if p := pods[pod]; p != nil {
					lbls = p.Labels
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
				if prev := seen[addr]; prev != nil {
					for k, v := range portMap {
						prev.ports[k] = v
					}
					continue
				}
				ports := make(map[uint32]uint32, len(portMap))
				for k, v := range portMap {
					ports[k] = v
				}
				ep := &endpoint{address: addr, labels: lbls, node: node, zone: zone, pod: pod, ports: ports}
				seen[addr] = ep
				out = append(out, ep)
			}
		}
	}
	return out
}

func (t *translator) endpointsFromPods(s *service, pods []*corev1.Pod) []*endpoint {
	var out []*endpoint
	for _, p := range pods {
		if !labelsMatch(s.selector, p.Labels) || !podReady(p) {
			continue
		}
		ports := map[uint32]uint32{}
		for _, sp := range s.ports {
			if tp, ok := resolveTargetPort(sp, p); ok {
				ports[sp.port] = tp
			}
		}
		ep := &endpoint{labels: p.Labels, node: p.Spec.NodeName, pod: p.Namespace + "/" + p.Name, ports: ports}
		for _, ip := range podIPs(p) {
			e := *ep
			e.address = ip
			out = append(out, &e)
		}
	}
	return out
}

func podIPs(p *corev1.Pod) []string {
	if len(p.Status.PodIPs) > 0 {
		out := make([]string, 0, len(p.Status.PodIPs))
		for _, ip := range p.Status.PodIPs {
			out = append(out, ip.IP)
		}
		return out
	}
	if p.Status.PodIP != "" {
		return []string{p.Status.PodIP}
	}
	return nil
}

// podReady: the Pod has an address, is not finished or terminating, and is not
// known to be unready. A Pod written in a manifest without conditions counts as
// ready.
func podReady(p *corev1.Pod) bool {
	if len(podIPs(p)) == 0 || p.DeletionTimestamp != nil {
		return false
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return true
}

// resolveTargetPort finds the backend port of a Service port on a Pod.
func resolveTargetPort(sp servicePort, p *corev1.Pod) (uint32, bool) {
	tp := sp.targetPort
	switch {
	case tp.Type == 0 && tp.IntVal == 0: // unset: same as port
		return sp.port, true
	case tp.Type == 0:
		return uint32(tp.IntVal), true
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == tp.StrVal {
				return uint32(cp.ContainerPort), true
			}
		}
	}
	return 0, false
}

// subsetEndpoints filters a Service's endpoints by subset labels for a port.
func subsetEndpoints(s *service, port uint32, subsetLabels map[string]string) []ir.Endpoint {
	var out []ir.Endpoint
	for _, e := range s.endpoints {
		tp, ok := e.ports[port]
		if !ok {
			continue
		}
		if !labelsMatch(subsetLabels, e.labels) {
			continue
		}
		out = append(out, ir.Endpoint{Address: e.address, Port: tp, Zone: e.zone, Node: e.node, Pod: e.pod})
	}
	return out
}

// labelsMatch reports whether every selector label is present with its value
// (an equality-based selector; an empty selector matches everything).
func labelsMatch(selector, lbls map[string]string) bool {
	for k, v := range selector {
		if got, ok := lbls[k]; !ok || got != v {
			return false
		}
	}
	return true
}
