package lbsync

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodemesh/nodemesh/bpf"
)

// Input is what Frontends reads.
type Input struct {
	Services []*corev1.Service
	Slices   []*discoveryv1.EndpointSlice
	// NodeName selects the endpoints of a Service with
	// internalTrafficPolicy Local.
	NodeName string
	// NodeIPs get a frontend for every NodePort (pods reaching a NodePort
	// on their node's addresses).
	NodeIPs []netip.Addr
}

// Diagnostic is a Service (or all of them: Name "*") the socket load
// balancing cannot serve as asked.
type Diagnostic struct {
	Namespace, Name string
	Message         string
}

func (d Diagnostic) String() string {
	if d.Name == "*" {
		return "load balancing: " + d.Message
	}
	return fmt.Sprintf("Service %s/%s: %s", d.Namespace, d.Name, d.Message)
}

// Frontends computes every frontend and its backends:
//
//   - frontends: each IPv4 ClusterIP × port, and each of NodeIPs × nodePort
//     (NodePort and LoadBalancer Services), TCP and UDP. Headless and
//     ExternalName Services have none. spec.externalIPs and load balancer
//     ingress addresses are deliberately not served: any user who can write
//     a Service could otherwise take over traffic to any address
//     (CVE-2020-8554; docs/design/security.md).
//   - backends: the endpoints of the Service's IPv4 EndpointSlices that are
//     ready; when none is, those serving and terminating (kube-proxy's
//     choice); the port is the slice's port of the Service port's name and
//     protocol. internalTrafficPolicy Local keeps this node's endpoints for
//     the ClusterIP frontends; NodePort frontends, reached from pods, use
//     every endpoint (kube-proxy short-circuits in-cluster traffic the same
//     way whatever externalTrafficPolicy says).
//
// A frontend without backend is still written: connecting to it is refused,
// as kube-proxy rejects it.
func Frontends(in Input) (Want, []Diagnostic) {
	want := Want{}
	var diags []Diagnostic
	slicesOf := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range in.Slices {
		name := s.Labels[discoveryv1.LabelServiceName]
		if name == "" || s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		slicesOf[s.Namespace+"/"+name] = append(slicesOf[s.Namespace+"/"+name], s)
	}
	svcs := slices.Clone(in.Services)
	slices.SortFunc(svcs, func(a, b *corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	owner := map[Frontend]string{}
	put := func(s *corev1.Service, f Frontend, bs []Backend) {
		if o, ok := owner[f]; ok {
			diags = append(diags, Diagnostic{s.Namespace, s.Name, fmt.Sprintf("frontend %s is already %s's; not load balanced for this Service", f, o)})
			return
		}
		owner[f] = s.Namespace + "/" + s.Name
		want[f] = bs
	}
	for _, s := range svcs {
		if s.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		ips := s.Spec.ClusterIPs
		if len(ips) == 0 && s.Spec.ClusterIP != "" {
			ips = []string{s.Spec.ClusterIP}
		}
		local := s.Spec.InternalTrafficPolicy != nil && *s.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
		for _, sp := range s.Spec.Ports {
			proto, ok := protoOf(sp.Protocol)
			if !ok {
				diags = append(diags, Diagnostic{s.Namespace, s.Name, fmt.Sprintf("port %d: protocol %s is not load balanced at the socket (TCP and UDP are)", sp.Port, sp.Protocol)})
				continue
			}
			all := backends(slicesOf[s.Namespace+"/"+s.Name], sp, proto, "")
			for _, ipStr := range ips {
				ip, err := netip.ParseAddr(ipStr)
				if err != nil || !ip.Is4() {
					continue // "None" (headless) or IPv6
				}
				bs := all
				if local {
					bs = backends(slicesOf[s.Namespace+"/"+s.Name], sp, proto, in.NodeName)
				}
				put(s, Frontend{Addr: netip.AddrPortFrom(ip, uint16(sp.Port)), Proto: proto}, bs)
			}
			if sp.NodePort != 0 && (s.Spec.Type == corev1.ServiceTypeNodePort || s.Spec.Type == corev1.ServiceTypeLoadBalancer) {
				for _, ip := range in.NodeIPs {
					if ip.Is4() {
						put(s, Frontend{Addr: netip.AddrPortFrom(ip, uint16(sp.NodePort)), Proto: proto}, all)
					}
				}
			}
		}
	}
	return want, diags
}

func protoOf(p corev1.Protocol) (uint8, bool) {
	switch p {
	case "", corev1.ProtocolTCP:
		return bpf.ProtoTCP, true
	case corev1.ProtocolUDP:
		return bpf.ProtoUDP, true
	}
	return 0, false
}

// backends are the endpoints of a Service port (on node only, if set):
// ready ones, or serving-and-terminating ones when none is ready; sorted,
// without duplicates.
func backends(ss []*discoveryv1.EndpointSlice, sp corev1.ServicePort, proto uint8, node string) []Backend {
	var ready, terminating []Backend
	for _, s := range ss {
		port, ok := slicePort(s, sp.Name, proto)
		if !ok {
			continue
		}
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			if node != "" && (ep.NodeName == nil || *ep.NodeName != node) {
				continue
			}
			// Consumers read the first address (the API allows one per
			// endpoint of an IPv4 slice today).
			ip, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil || !ip.Is4() {
				continue
			}
			b := Backend{Addr: netip.AddrPortFrom(ip, port), Proto: proto}
			isTrue := func(p *bool, unset bool) bool {
				if p == nil {
					return unset
				}
				return *p
			}
			isTerminating := isTrue(ep.Conditions.Terminating, false)
			// A nil ready is "unknown, treat as ready"; nil serving
			// defers to ready.
			isReady := isTrue(ep.Conditions.Ready, true) && !isTerminating
			isServing := isTrue(ep.Conditions.Serving, isTrue(ep.Conditions.Ready, true))
			switch {
			case isReady:
				ready = append(ready, b)
			case isServing && isTerminating:
				terminating = append(terminating, b)
			}
		}
	}
	out := ready
	if len(out) == 0 {
		out = terminating
	}
	slices.SortFunc(out, func(a, b Backend) int { return a.Addr.Compare(b.Addr) })
	return slices.Compact(out)
}

// slicePort is the port of the slice named like the Service port, with its
// protocol.
func slicePort(s *discoveryv1.EndpointSlice, name string, proto uint8) (uint16, bool) {
	for _, p := range s.Ports {
		pname := ""
		if p.Name != nil {
			pname = *p.Name
		}
		pproto := corev1.ProtocolTCP
		if p.Protocol != nil {
			pproto = *p.Protocol
		}
		if got, ok := protoOf(pproto); !ok || got != proto || pname != name || p.Port == nil {
			continue
		}
		if *p.Port <= 0 || *p.Port > 65535 {
			return 0, false
		}
		return uint16(*p.Port), true
	}
	return 0, false
}

// Fit bounds want to what the maps hold: maxEntries services-map entries
// (a master per frontend plus a slot per backend) and maxBackends distinct
// backends. Frontends are admitted from the fewest backends up (then by
// address), so a Service with a huge set of endpoints — anyone who can
// write EndpointSlices in a namespace can make one — cannot push out the
// others; a frontend whose backends do not fit keeps its master entry with
// no backend (connections are refused, not sent somewhere else) while
// there is room for it, and a diagnostic says which.
func Fit(w Want, maxEntries, maxBackends int) (Want, []Diagnostic) {
	fs := sortedFrontends(w)
	slices.SortStableFunc(fs, func(a, b Frontend) int { return cmp.Compare(len(w[a]), len(w[b])) })
	out := Want{}
	var diags []Diagnostic
	entries := 0
	seen := map[Backend]bool{}
	for _, f := range fs {
		bs := w[f]
		fresh := 0
		for _, b := range bs {
			if !seen[b] {
				fresh++
			}
		}
		switch {
		case entries+1+len(bs) <= maxEntries && len(seen)+fresh <= maxBackends && len(bs) <= 65535:
			for _, b := range bs {
				seen[b] = true
			}
			out[f] = bs
			entries += 1 + len(bs)
		case entries+1 <= maxEntries:
			out[f] = nil
			entries++
			diags = append(diags, Diagnostic{"*", "*", fmt.Sprintf("frontend %s: its %d backends do not fit in the load balancing maps; connections to it are refused", f, len(bs))})
		default:
			diags = append(diags, Diagnostic{"*", "*", fmt.Sprintf("frontend %s: the load balancing maps are full; not load balanced", f)})
		}
	}
	return out, diags
}
