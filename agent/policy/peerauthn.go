package policy

import (
	"encoding/json"
	"fmt"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// PeerAuthentication on meshed pods (docs/design/policy.md §10). A migrated
// pod has no sidecar to terminate mutual TLS; what STRICT guarantees in
// Istio — the peer proved a workload identity of the mesh — the datapath
// guarantees by attestation instead: every pod address maps to its
// identity, anti-spoofed on every node (docs/design/identity.md). So
// STRICT on a port is exactly istiod's conversion for ztunnel
// (converted_peer_authentication_*: DENY notPrincipals presence on the
// STRICT ports): deny entries, in the authorization gate, from every
// identity that is not a pod's — WORLD, the CIDR identities and, when the
// agent does not let the node in, HOST — on the port's TCP traffic.
// PERMISSIVE and DISABLE add nothing.
//
// Deny entries win over every allow, so the composition is Istio's order
// (authentication before authorization): a STRICT port refuses a peer
// without an identity whatever an AuthorizationPolicy or a NetworkPolicy
// allows, and a peer with one goes on to be judged by them.

// KindPeerAuthentication is Istio's PeerAuthentication.
const KindPeerAuthentication = authz.PeerAuthnKind

// DecodePeerAuthentication reads a PeerAuthentication (security.istio.io v1
// or v1beta1) from its unstructured form.
func DecodePeerAuthentication(obj map[string]any) (*securityv1.PeerAuthentication, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode peer authentication: %w", err)
	}
	pa := &securityv1.PeerAuthentication{}
	if err := json.Unmarshal(b, pa); err != nil {
		return nil, fmt.Errorf("decode peer authentication: %w", err)
	}
	return pa, nil
}

// PeerAuthentications indexes PeerAuthentications for Input.PeerAuthn
// (unreadable: those that did not decode; their namespace is STRICT), with
// what istiod would ignore of them as diagnostics.
func PeerAuthentications(pas []*securityv1.PeerAuthentication, rootNamespace string, unreadable []ir.ResourceRef) (*authz.PeerAuthentications, []Diagnostic) {
	idx := authz.NewPeerAuthentications(pas, rootNamespace, unreadable)
	var out []Diagnostic
	for _, d := range idx.Diagnostics {
		sev := Warning
		if d.Severity == ir.SeverityError {
			sev = Error
		}
		out = append(out, Diagnostic{Severity: sev, Kind: KindPeerAuthentication, Namespace: d.Resource.Namespace,
			Name: d.Resource.Name, Field: d.Field, Message: d.Message})
	}
	return idx, out
}

// unauthenticated is every identity an address can have that is not a
// pod's: no workload identity, so STRICT refuses it. HOST is left out
// while the agent lets the node in (AllowHostIngress): Istio never subjects
// kubelet probes to PeerAuthentication (the injector rewrites them to the
// sidecar's agent, ambient's CNI lets the node's probes past ztunnel).
func (t *translator) unauthenticated() peerSet {
	const key = "\x00unauthenticated"
	if p, ok := t.memo[key]; ok {
		return p
	}
	seen := map[bpf.Identity]bool{}
	for _, id := range t.universe {
		if _, pod := t.facts[id]; pod || id == bpf.IdentityHost && t.in.AllowHostIngress {
			continue
		}
		seen[id] = true
	}
	p := sortedSet(seen)
	t.memo[key] = p
	return p
}

// peerAuthn writes the deny entries of an endpoint's STRICT ports into its
// authorization gate part. Only meshed endpoints: a pod with a sidecar is
// authenticated by its sidecar, a pod outside the mesh by nobody (Istio).
func (t *translator) peerAuthn(ep Endpoint, parts []*IdentityPolicy) []*IdentityPolicy {
	if t.in.PeerAuthn == nil || !ep.Meshed {
		return parts
	}
	all, except := t.in.PeerAuthn.For(ep.Namespace, ep.Labels).StrictPorts()
	var ports []portProto
	switch {
	case all && len(except) == 0:
		ports = []portProto{{proto: bpf.ProtoTCP}}
	case all:
		list := make([]ir.PortMatch, 0, len(except))
		for _, p := range except {
			list = append(list, ir.PortMatch{Port: uint16(p), Protocol: ir.IPProtocolTCP})
		}
		rest, _ := notPorts(list)
		for _, s := range rest {
			ports = append(ports, s.pp...)
		}
	default:
		for _, p := range except {
			ports = append(ports, portProto{port: uint16(p), proto: bpf.ProtoTCP})
		}
	}
	peers := t.unauthenticated()
	if len(ports) == 0 || peers.empty() {
		return parts
	}
	g := gateOrder[ir.GateAuthorization]
	for len(parts) <= g {
		parts = append(parts, nil)
	}
	if parts[g] == nil {
		parts[g] = &IdentityPolicy{Entries: map[bpf.PolicyKey]bpf.Verdict{}, Ranges: map[bpf.PortRangeKey]bpf.Verdict{}}
	}
	for _, pp := range ports {
		put(parts[g], ep.Identity, peers, pp, bpf.Ingress, bpf.Deny)
	}
	return parts
}
