package istio

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// entryInfo is the ServiceEntry behind a service of the registry: each of
// its hosts becomes one service, as istiod's serviceentry controller
// converts it (pilot/pkg/serviceregistry/serviceentry/conversion.go,
// convertServices). Everything else — clusters, virtual hosts,
// DestinationRules, VirtualService routes — then treats the host as any
// Service, which is what istiod does with a model.Service of the External
// registry.
type entryInfo struct {
	ref ir.ResourceRef
	obj *networkingv1.ServiceEntry
	// external is location MESH_EXTERNAL (the default): no auto-mTLS, as
	// Istio's buildUpstreamTLSSettings skips it for mesh-external services.
	external   bool
	resolution networking.ServiceEntry_Resolution
	// prefixes are spec.addresses as CIDRs (an IP is a /32 or /128): the
	// addresses a TCP port's filter chain matches.
	prefixes []string
	// ips are the addresses that are plain IPs: Host header values too
	// (generateVirtualHostDomains adds the service's addresses, not CIDRs).
	ips []string
	// selector is spec.workloadSelector: Pods of the entry's namespace
	// are its endpoints (WorkloadEntries are not read yet).
	selector map[string]string
}

// compareEntries is Istio's configCompareByCreationTime
// (pilot/pkg/model/config.go): the older ServiceEntry first, then by name,
// then by namespace, so that equal timestamps still order the same way.
func compareEntries(a, b *networkingv1.ServiceEntry) int {
	return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Namespace, b.Namespace))
}

// indexServiceEntries adds every ServiceEntry host to the registry, after
// the Kubernetes Services. A host already declared — by a Kubernetes
// Service, or by an older ServiceEntry — keeps its first declaration and
// the later one is reported: Istio's sidecar scope keeps one service per
// host name too, and a node Envoy serves every class from one registry.
//
// exportTo (or the mesh's defaultServiceExportTo) is each host's, as for a
// Service: serviceVisible decides per source class.
func (t *translator) indexServiceEntries() {
	objs := slices.Clone(t.bag.ServiceEntries)
	slices.SortStableFunc(objs, compareEntries)
	for _, obj := range objs {
		e := t.validateServiceEntry(obj)
		if e == nil {
			continue
		}
		for i, h := range obj.Spec.Hosts {
			field := ir.Path("spec.hosts").Index(i)
			if prev := t.services[h]; prev != nil {
				t.diags.Warnf(ir.CodeConflict, e.ref, string(field),
					"host %q is already declared by %s, which takes precedence (Kubernetes Service, or older ServiceEntry); this host of the entry is ignored", h, prev.ref)
				continue
			}
			s := &service{
				ref:       e.ref,
				name:      h, // Istio's Attributes.Name of an entry's service is its host
				namespace: obj.Namespace,
				fqdn:      h,
				entry:     e,
				selector:  e.selector,
				exportTo:  exportToOf(obj.Namespace, obj.Spec.ExportTo, t.opts.DefaultServiceExportTo),
			}
			for j, p := range obj.Spec.Ports {
				sp := servicePort{
					name:     p.Name,
					port:     p.Number,
					protocol: entryPortProtocol(p.Protocol),
					field:    ir.Path("spec.ports").Index(j),
				}
				if p.TargetPort != 0 {
					sp.targetPort = intstr.FromInt32(int32(p.TargetPort))
				}
				s.ports = append(s.ports, sp)
			}
			t.services[h] = s
			t.serviceList = append(t.serviceList, s)
			if isWildcard(h) {
				t.wildcardEntries = append(t.wildcardEntries, s)
			}
		}
	}
	// Kubernetes Services first: where an entry's address or domain is also
	// a Service's (its ClusterIP), the Service keeps it and the entry is the
	// conflict reported — an entry must not take another namespace's
	// Service traffic by naming its address.
	slices.SortFunc(t.serviceList, func(a, b *service) int {
		return cmp.Or(cmp.Compare(boolInt(a.entry != nil), boolInt(b.entry != nil)), cmp.Compare(a.fqdn, b.fqdn))
	})
	// Most specific first (Istio's host.MoreSpecific: the longer pattern);
	// patterns are unique, so the order is total.
	slices.SortStableFunc(t.wildcardEntries, func(a, b *service) int {
		return cmp.Or(-cmp.Compare(len(a.fqdn), len(b.fqdn)), cmp.Compare(a.fqdn, b.fqdn))
	})
}

// entryPortProtocol is Istio's protocol.Parse for a ServiceEntry port:
// case-insensitive; an empty or unknown protocol is sniffed.
func entryPortProtocol(proto string) ir.Protocol {
	return portProtocol(corev1.ServicePort{Name: strings.ToLower(proto)})
}

// validateServiceEntry checks what Istio's ServiceEntry validation
// (pkg/config/validation, ValidateServiceEntry) rejects and what nodemesh
// cannot translate. An entry Istio would reject is an error and is left
// out; a field nodemesh does not translate is a warning that names it.
func (t *translator) validateServiceEntry(obj *networkingv1.ServiceEntry) *entryInfo {
	ref := ir.ResourceRef{Kind: "ServiceEntry", Namespace: obj.Namespace, Name: obj.Name}
	spec := &obj.Spec
	e := &entryInfo{ref: ref, obj: obj, external: spec.Location == networking.ServiceEntry_MESH_EXTERNAL, resolution: spec.Resolution}
	bad := false
	fail := func(field, format string, args ...any) {
		t.diags.Errorf(ir.CodeInvalidValue, ref, field, format, args...)
		bad = true
	}
	if len(spec.Hosts) == 0 {
		fail("spec.hosts", "a ServiceEntry needs at least one host; the entry is ignored")
	}
	for i, h := range spec.Hosts {
		if h == "" || h == "*" || strings.Contains(h[min(1, len(h)):], "*") {
			fail(string(ir.Path("spec.hosts").Index(i)), "host %q is not a host name or a *.suffix wildcard; the entry is ignored", h)
		}
	}
	if len(spec.Ports) == 0 {
		fail("spec.ports", "a ServiceEntry needs at least one port; the entry is ignored")
	}
	seen := map[uint32]bool{}
	for i, p := range spec.Ports {
		field := ir.Path("spec.ports").Index(i)
		switch {
		case p.Number == 0 || p.Number > 65535:
			fail(string(field.Field("number")), "port %d is out of range; the entry is ignored", p.Number)
		case seen[p.Number]:
			fail(string(field.Field("number")), "port %d is declared twice; the entry is ignored", p.Number)
		case p.TargetPort > 65535:
			fail(string(field.Field("targetPort")), "targetPort %d is out of range; the entry is ignored", p.TargetPort)
		}
		seen[p.Number] = true
		if entryPortProtocol(p.Protocol) == ir.ProtocolUDP {
			t.diags.Infof(ir.CodeUnsupportedField, ref, string(field.Field("protocol")), "%s port %d is not proxied (Istio does not proxy it either)", p.Protocol, p.Number)
		}
	}
	for i, a := range spec.Addresses {
		field := string(ir.Path("spec.addresses").Index(i))
		if ip, err := netip.ParseAddr(a); err == nil {
			e.prefixes = append(e.prefixes, netip.PrefixFrom(ip, ip.BitLen()).String())
			e.ips = append(e.ips, ip.String())
			continue
		}
		pfx, err := netip.ParsePrefix(a)
		if err != nil {
			fail(field, "address %q is neither an IP address nor a CIDR; the entry is ignored", a)
			continue
		}
		if pfx.Bits() == pfx.Addr().BitLen() {
			e.ips = append(e.ips, pfx.Addr().String()) // a /32 is an IP (convertServices)
		}
		e.prefixes = append(e.prefixes, pfx.Masked().String())
	}
	slices.Sort(e.prefixes)
	e.prefixes = slices.Compact(e.prefixes)
	if ws := spec.WorkloadSelector; ws != nil {
		if len(spec.Endpoints) > 0 {
			fail("spec.workloadSelector", "workloadSelector and endpoints are mutually exclusive; the entry is ignored")
		}
		e.selector = ws.Labels
		if len(e.selector) == 0 {
			// An empty selector would select every Pod of the namespace:
			// deny more, not allow more.
			fail("spec.workloadSelector.labels", "an empty workloadSelector selects nothing nodemesh can trust; the entry is ignored")
		}
	}
	switch spec.Resolution {
	case networking.ServiceEntry_NONE:
	case networking.ServiceEntry_STATIC:
		for i, ep := range spec.Endpoints {
			if _, err := netip.ParseAddr(ep.Address); err != nil {
				fail(string(ir.Path("spec.endpoints").Index(i).Field("address")), "endpoint address %q is not an IP address, which resolution STATIC requires; the entry is ignored", ep.Address)
			}
		}
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
		if len(spec.Endpoints) == 0 && e.selector == nil {
			for i, h := range spec.Hosts {
				if isWildcard(h) {
					fail(string(ir.Path("spec.hosts").Index(i)), "wildcard host %q cannot be resolved by DNS without endpoints; the entry is ignored", h)
				}
			}
		}
		if spec.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN && len(spec.Endpoints) > 1 {
			fail("spec.endpoints", "resolution DNS_ROUND_ROBIN takes at most one endpoint (Envoy's LOGICAL_DNS); the entry is ignored")
		}
		if len(spec.Addresses) > 0 && len(spec.Endpoints) == 0 && e.selector == nil {
			// Istio resolves the host, not the address; so does nodemesh.
			t.diags.Infof(ir.CodeChangedBehavior, ref, "spec.addresses", "connections to these addresses are resolved by DNS of the host names, as in Istio")
		}
	default:
		t.diags.Warnf(ir.CodeUnsupportedField, ref, "spec.resolution", "resolution %s is not supported; the entry is ignored and its hosts pass through (or are blocked under REGISTRY_ONLY)", spec.Resolution)
		bad = true
	}
	for i, ep := range spec.Endpoints {
		field := ir.Path("spec.endpoints").Index(i)
		if strings.HasPrefix(ep.Address, "unix://") {
			fail(string(field.Field("address")), "unix domain socket endpoints are not reachable from a node proxy; the entry is ignored")
		}
		if ep.Network != "" {
			t.diags.Warnf(ir.CodeUnsupportedField, ref, string(field.Field("network")), "networks are not supported: the endpoint is used as if it were on the local network")
		}
	}
	// Istio's ValidateExportTo for a ServiceEntry: as for other kinds, and
	// "~" alone (visible to no client) is allowed.
	if !(len(spec.ExportTo) == 1 && spec.ExportTo[0] == exportNone) {
		if err := validateExportTo(ref.Namespace, spec.ExportTo); err != nil {
			fail("spec.exportTo", "%v; Istio rejects the entry, so it is ignored", err)
		}
	}
	if bad {
		return nil
	}
	return e
}

// entryEndpoints are the endpoints of a ServiceEntry host, as
// convertServiceEntryToInstances makes them: the inline endpoints (their
// ports: endpoint.ports[port name], else targetPort, else the port), the
// Pods of workloadSelector, or, for DNS resolution without either, the
// host itself (to be resolved by Envoy). NONE without endpoints has none:
// its clusters connect to the original destination.
func (t *translator) entryEndpoints(s *service, index podIndex) []*endpoint {
	spec := &s.entry.obj.Spec
	var out []*endpoint
	switch {
	case len(spec.Endpoints) > 0:
		for _, we := range spec.Endpoints {
			ep := &endpoint{address: we.Address, labels: we.Labels, weight: we.Weight, zone: localityZone(we.Locality)}
			// A workload whose labels say tlsMode istio accepts Istio mTLS
			// (Istio's getTLSModeFromWorkloadEntry).
			ep.sidecar = we.Labels[input.IstioTLSModeLabel] == "istio"
			// we.ServiceAccount is not read: SANs of inline endpoints come
			// from spec.subjectAltNames (serviceAccounts).
			for _, p := range s.ports {
				backend := p.port
				if n, ok := we.Ports[p.name]; ok && n > 0 {
					backend = n
				} else if p.targetPort.IntVal > 0 {
					backend = uint32(p.targetPort.IntVal)
				}
				ep.ports.set(p.port, backend)
			}
			out = append(out, ep)
		}
	case s.selector != nil:
		sel := newSelector(s.selector)
		for _, p := range index.candidates(s.namespace, s.selector) {
			if !sel.matches(p.Labels) || !podReady(p) {
				continue
			}
			for _, ip := range p.IPs {
				ep := &endpoint{address: ip, labels: p.Labels, node: p.NodeName, pod: p.Namespace + "/" + p.Name,
					account: p.IdentityAccount(), sidecar: p.AcceptsIstioMTLS()}
				for _, sp := range s.ports {
					ep.ports.set(sp.port, entryPodPort(sp, p))
				}
				out = append(out, ep)
			}
		}
	case s.entry.resolution == networking.ServiceEntry_DNS || s.entry.resolution == networking.ServiceEntry_DNS_ROUND_ROBIN:
		ep := &endpoint{address: s.fqdn}
		for _, p := range s.ports {
			backend := p.port
			if p.targetPort.IntVal > 0 {
				backend = uint32(p.targetPort.IntVal)
			}
			ep.ports.set(p.port, backend)
		}
		out = append(out, ep)
	}
	return out
}

// entryPodPort is the port of a selected Pod for an entry port: the Pod's
// container port of the same name, else targetPort, else the port (the
// priority convertWorkloadInstanceToServiceInstance gives a workload's
// named ports).
func entryPodPort(sp servicePort, p *input.Pod) uint32 {
	if n, ok := p.NamedPort(sp.name); ok && sp.name != "" && n > 0 {
		return uint32(n)
	}
	if sp.targetPort.IntVal > 0 {
		return uint32(sp.targetPort.IntVal)
	}
	return sp.port
}

// localityZone is the zone of an Istio locality (region/zone/subzone).
func localityZone(locality string) string {
	parts := strings.Split(locality, "/")
	if len(parts) < 2 {
		return ""
	}
	return parts[1]
}

// entryDiscovery is Istio's convertResolution (pilot/pkg/networking/core/
// cluster.go) for a sidecar: STATIC → EDS, DNS → STRICT_DNS,
// DNS_ROUND_ROBIN → LOGICAL_DNS, NONE → ORIGINAL_DST.
func entryDiscovery(r networking.ServiceEntry_Resolution) ir.Discovery {
	switch r {
	case networking.ServiceEntry_STATIC:
		return ir.DiscoveryEDS
	case networking.ServiceEntry_DNS:
		return ir.DiscoveryStrictDNS
	case networking.ServiceEntry_DNS_ROUND_ROBIN:
		return ir.DiscoveryLogicalDNS
	default:
		return ir.DiscoveryOriginalDst
	}
}

// externalHost finds the wildcard ServiceEntry host that covers a host no
// service declares exactly: the most specific one, as Istio's
// MostSpecificHostMatch (pilot/pkg/model/config.go) picks it. A pattern
// is declared once (the oldest entry keeps it, indexServiceEntries), so
// the answer does not depend on map or input order.
func (t *translator) externalHost(host string) (*service, bool) {
	for _, s := range t.wildcardEntries {
		if s.fqdn != host && hostMatches(host, s.fqdn) {
			return s, true
		}
	}
	return nil, false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
