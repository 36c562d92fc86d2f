package authz

import (
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Inbound Istio mTLS for sidecar clients (docs/design/policy.md §10,
// "Inbound mTLS termination"). A sidecar client sends Istio mTLS to a
// migrated pod when a DestinationRule says ISTIO_MUTUAL for its host (auto
// mTLS alone sends plaintext: the migrated pod lost its
// security.istio.io/tlsMode=istio label). Those ports are captured into the
// node Envoy's inbound listener, which terminates the TLS with the pod's
// certificate under the pod's effective PeerAuthentication mode. The
// controller (chains) and the agent (capture) decide with this one rule.
//
// The rule over-approximates on purpose — capturing a port nobody sends
// mTLS to costs a hop under PERMISSIVE, and under STRICT refuses the
// plaintext Istio's STRICT refuses too, while not capturing a port a client
// does send mTLS to hands TLS bytes to the pod (the call breaks):
//
//   - every DestinationRule counts for every client: exportTo, the rule's
//     workloadSelector (which clients it applies to) and Istio's choice
//     among several rules for one host (the client's namespace first, the
//     most specific host) are not read — any rule whose host matches and
//     whose TLS mode for the port is ISTIO_MUTUAL captures the port;
//   - a subset counts for the pods its labels select; its TLS settings and
//     port-level settings override the rule's as Istio merges them
//     (port-level settings replace the TLS settings wholesale);
//   - DestinationRules for ServiceEntry hosts that select pods are not
//     read (those calls stay broken, as before).

// MTLSTermination is what the inbound mTLS decision reads: the
// DestinationRules, the PeerAuthentications (nil: PERMISSIVE everywhere,
// Istio's default) and the cluster's DNS domain (Services' hosts are
// NAME.NAMESPACE.svc.DOMAIN).
type MTLSTermination struct {
	DestinationRules []*networkingv1.DestinationRule
	PeerAuthn        *PeerAuthentications
	ClusterDomain    string
}

// mtlsRule is a DestinationRule with an ISTIO_MUTUAL setting somewhere.
type mtlsRule struct {
	namespace, host string
	spec            *networkingapi.DestinationRule
}

type mtlsState struct {
	rules  []mtlsRule
	pa     *PeerAuthentications
	domain string
}

// WithMTLS adds inbound Istio mTLS termination to the decision: Ports then
// also lists the ports sidecar clients may send Istio mTLS to (MTLSOnly
// when no HTTP policy captures them already), with the pod's effective
// PeerAuthentication mode. Without it (mTLS off) nothing changes. It
// returns c.
func (c *Capture) WithMTLS(m MTLSTermination) *Capture {
	st := &mtlsState{pa: m.PeerAuthn, domain: strings.TrimSuffix(m.ClusterDomain, ".")}
	if st.domain == "" {
		st.domain = "cluster.local"
	}
	for _, dr := range m.DestinationRules {
		if dr == nil || !mentionsIstioMutual(&dr.Spec) {
			continue // nothing to capture for (and a rule without ISTIO_MUTUAL costs nothing per pod)
		}
		st.rules = append(st.rules, mtlsRule{namespace: dr.Namespace, host: resolveHost(dr.Spec.GetHost(), dr.Namespace, st.domain), spec: &dr.Spec})
	}
	c.mtls = st
	return c
}

func isIstioMutual(t *networkingapi.ClientTLSSettings) bool {
	return t != nil && t.GetMode() == networkingapi.ClientTLSSettings_ISTIO_MUTUAL
}

func mentionsIstioMutual(dr *networkingapi.DestinationRule) bool {
	policies := []*networkingapi.TrafficPolicy{dr.GetTrafficPolicy()}
	for _, s := range dr.GetSubsets() {
		policies = append(policies, s.GetTrafficPolicy())
	}
	for _, p := range policies {
		if isIstioMutual(p.GetTls()) {
			return true
		}
		for _, pl := range p.GetPortLevelSettings() {
			if isIstioMutual(pl.GetTls()) {
				return true
			}
		}
	}
	return false
}

// resolveHost is Istio's ResolveShortnameToFQDN for a DestinationRule's
// host: a name without a dot (and not "*") is a Service of the rule's
// namespace.
func resolveHost(host, namespace, domain string) string {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "*" || strings.Contains(host, ".") || host == "" {
		return host
	}
	return host + "." + namespace + ".svc." + domain
}

// hostMatches: a rule's host names the Service's FQDN exactly, or is a
// wildcard ("*", "*.local", "*.ns.svc.cluster.local") whose suffix it has.
func hostMatches(ruleHost, fqdn string) bool {
	if ruleHost == "*" {
		return true
	}
	if suffix, ok := strings.CutPrefix(ruleHost, "*"); ok {
		return strings.HasSuffix(fqdn, suffix)
	}
	return ruleHost == fqdn
}

// portTLS is the TLS setting of a traffic policy for a Service port, over
// base (the enclosing policy's): a port-level entry for the port replaces
// it wholesale (unset there: no TLS setting), else the policy's own.
func portTLS(tp *networkingapi.TrafficPolicy, port uint32, base *networkingapi.ClientTLSSettings) *networkingapi.ClientTLSSettings {
	if tp == nil {
		return base
	}
	for _, pl := range tp.GetPortLevelSettings() {
		if pl.GetPort().GetNumber() == port {
			return pl.GetTls()
		}
	}
	if tp.GetTls() != nil {
		return tp.GetTls()
	}
	return base
}

// sendsMTLS: some DestinationRule makes a client send Istio mTLS to the
// Service port svcPort of s when it picks a pod with podLabels.
func (st *mtlsState) sendsMTLS(s *corev1.Service, svcPort uint32, podLabels map[string]string) bool {
	fqdn := s.Name + "." + s.Namespace + ".svc." + st.domain
	for _, r := range st.rules {
		if !hostMatches(r.host, fqdn) {
			continue
		}
		top := portTLS(r.spec.GetTrafficPolicy(), svcPort, nil)
		if isIstioMutual(top) {
			return true
		}
		for _, sub := range r.spec.GetSubsets() {
			if len(sub.GetLabels()) > 0 && !labels.SelectorFromSet(sub.GetLabels()).Matches(labels.Set(podLabels)) {
				continue
			}
			if isIstioMutual(portTLS(sub.GetTrafficPolicy(), svcPort, top)) {
				return true
			}
		}
	}
	return false
}

// mtlsPorts are the container ports of a meshed pod that sidecar clients may
// send Istio mTLS to, with the pod's effective mode on each (DISABLE ports
// left out: nothing terminates there, plaintext is what the pod gets).
func (c *Capture) mtlsPorts(w Workload) map[uint32]MTLSMode {
	st := c.mtls
	if st == nil || len(st.rules) == 0 {
		return nil
	}
	var out map[uint32]MTLSMode
	var eff *EffectivePeerAuthn
	for _, s := range c.services[w.Namespace] {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.Labels)) {
			continue
		}
		for _, sp := range s.Spec.Ports {
			if PortProtocol(sp) == ir.ProtocolUDP || sp.Port <= 0 {
				continue
			}
			port, ok := targetPort(sp, w.NamedPorts)
			if !ok || !st.sendsMTLS(s, uint32(sp.Port), w.Labels) {
				continue
			}
			if eff == nil {
				e := st.pa.For(w.Namespace, w.Labels)
				eff = &e
			}
			mode := eff.Port(port).Mode
			if mode == ModeDisable {
				continue
			}
			if out == nil {
				out = map[uint32]MTLSMode{}
			}
			out[port] = mode
		}
	}
	return out
}
