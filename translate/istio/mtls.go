package istio

import (
	"net/netip"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Istio's ALPN for in-mesh mTLS with metadata exchange
// (pilot/pkg/networking/util ALPNInMeshWithMxc, ALPNInMeshH2WithMxc).
var (
	alpnInMesh   = []string{"istio-peer-exchange", "istio"}
	alpnInMeshH2 = []string{"istio-peer-exchange", "istio", "h2"}
)

// applyIstioMTLS is Istio's buildUpstreamTLSSettings and
// applyUpstreamTLSSettings (pilot/pkg/networking/core/cluster_tls.go) for a
// cluster whose DestinationRule TLS settings are tls (nil when none):
//
//   - no TLS settings: auto-mTLS (mesh default enableAutoMtls), mTLS to the
//     endpoints that carry tlsMode istio, plaintext to the others; not for
//     ORIGINAL_DST clusters (headless Services, PASSTHROUGH), as Istio;
//   - ISTIO_MUTUAL: mTLS to every endpoint; the rule's SNI and SANs, else
//     Istio's (outbound_ SNI, the Service's accounts);
//   - DISABLE, SIMPLE, MUTUAL: the user's settings, and no auto-mTLS (a
//     DestinationRule with TLS settings turns it off for its clusters).
//
// PeerAuthentication DISABLE of the destination (Istio's serviceMTLSMode)
// is not read yet: auto-mTLS still offers mTLS to sidecar pods, which
// a PERMISSIVE or DISABLE server accepts or refuses (docs/parity.md).
func (t *translator) applyIstioMTLS(c *ir.Cluster, s *service, tls *networking.ClientTLSSettings) {
	h2 := c.Protocol.IsHTTP2() || (c.HTTP != nil && c.HTTP.HTTP2)
	alpn := alpnInMesh
	if h2 {
		alpn = alpnInMeshH2
	}
	m := &ir.IstioMTLS{
		SNI:             ir.IstioMTLSSNI(c.Port, c.Subset, s.fqdn),
		SubjectAltNames: t.serviceAccounts(s),
		ALPN:            slices.Clone(alpn),
	}
	switch {
	case tls == nil:
		if c.Discovery == ir.DiscoveryOriginalDst {
			return
		}
		if s.entry != nil && s.entry.external {
			return // buildUpstreamTLSSettings: no auto-mTLS to mesh-external services
		}
		m.Auto = true
	case tls.Mode == networking.ClientTLSSettings_ISTIO_MUTUAL:
		if tls.Sni != "" {
			m.SNI = tls.Sni
		}
		if tls.SubjectAltNames != nil {
			m.SubjectAltNames = slices.Clone(tls.SubjectAltNames)
		}
		m.InsecureSkipVerify = tls.InsecureSkipVerify.GetValue()
	default:
		return
	}
	c.IstioMTLS = m
}

// serviceAccounts are Istio's SANs of a Service: the SPIFFE IDs of the
// service accounts of its pods, sorted (PushContext.ServiceAccounts).
// Istio also adds the Service's alpha.istio.io/canonical-serviceaccounts
// annotation and trust-domain aliases; nodemesh does not yet.
func (t *translator) serviceAccounts(s *service) []string {
	if v, ok := t.sans[s]; ok {
		return v
	}
	out := accountsOf(t.opts.TrustDomain, t.endpoints[s])
	if s.entry != nil {
		// An entry's subjectAltNames are its service accounts
		// (convertServices), next to those of the workloads it selects.
		out = append(out, s.entry.obj.Spec.SubjectAltNames...)
		slices.Sort(out)
		out = slices.Compact(out)
	}
	if t.sans == nil {
		t.sans = map[*service][]string{}
	}
	t.sans[s] = out
	return out
}

// accountsOf are the sorted SPIFFE IDs of endpoints' pods.
func accountsOf(trustDomain string, eps []*endpoint) []string {
	var out []string
	for _, e := range eps {
		if e.account == "" {
			continue
		}
		ns, _, _ := strings.Cut(e.pod, "/")
		out = append(out, ir.SPIFFEID(trustDomain, ns, e.account))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// NodeIdentities are the workload identities of a node's client pods (those
// NodeClasses groups) with their addresses, sorted: the certificates the
// node Envoy presents for them (Options.IstioMTLS). A pod's identity is
// spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT.
func (p *Prepared) NodeIdentities(node string) []ir.ClientIdentity {
	optedIn := map[string]bool{}
	for _, ns := range p.t.bag.Namespaces {
		optedIn[ns.Name] = ns.Labels[DataplaneModeLabel] == DataplaneModeValue
	}
	byID := map[string]*ir.ClientIdentity{}
	for _, pod := range p.t.bag.Pods {
		if pod.NodeName != node || !optedIn[pod.Namespace] || !IsNodeClient(pod) {
			continue
		}
		id := ir.SPIFFEID(p.t.opts.TrustDomain, pod.Namespace, pod.IdentityAccount())
		ci := byID[id]
		if ci == nil {
			ci = &ir.ClientIdentity{SPIFFE: id}
			byID[id] = ci
		}
		for _, ip := range pod.IPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				// As the classes' source prefixes take it (hostPrefix), so
				// that the listener's identity chains match what they do.
				ci.Addresses = append(ci.Addresses, a.String())
			}
		}
	}
	// An address two identities claim (a stale pod and its successor) is
	// given to neither: its connections get the fallback socket rather than
	// possibly another pod's certificate.
	owner := map[string]string{}
	for id, ci := range byID {
		for _, a := range ci.Addresses {
			if o, ok := owner[a]; ok && o != id {
				owner[a] = ""
			} else if !ok {
				owner[a] = id
			}
		}
	}
	out := make([]ir.ClientIdentity, 0, len(byID))
	for id, ci := range byID {
		ci.Addresses = slices.DeleteFunc(ci.Addresses, func(a string) bool { return owner[a] != id })
		slices.Sort(ci.Addresses)
		ci.Addresses = slices.Compact(ci.Addresses)
		if len(ci.Addresses) > 0 {
			out = append(out, *ci)
		}
	}
	slices.SortFunc(out, func(a, b ir.ClientIdentity) int { return strings.Compare(a.SPIFFE, b.SPIFFE) })
	return out
}

// IstioMTLS are the clusters that carry Istio mTLS, by name (kept when
// Compact drops the model's clusters: the per-node step needs them).
func (p *Prepared) IstioMTLS() map[string]*ir.IstioMTLS { return p.mtls }
