package agent

import (
	"encoding/json"
	"slices"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/nodemesh/nodemesh/agent/policy"
	"github.com/nodemesh/nodemesh/translate/authz"
)

// Inbound Istio mTLS termination (docs/design/policy.md §10): with
// Config.IstioMTLS the node Envoy terminates the Istio mTLS sidecar clients
// send when a DestinationRule says ISTIO_MUTUAL, so the agent captures
// those ports too — by the controller's rule (authz.Capture.WithMTLS), from
// the DestinationRules it watches (networking.istio.io, discovered as the
// security kinds are, authz.go) and the PeerAuthentications it already
// enforces. A port captured only for mTLS keeps the authorization gate's
// L4 decisions (only ports captured for HTTP facts relax it, §7.3): the
// Envoy's upstream connection carries the client's own address.

// destinationRules are the DestinationRules for the mTLS decision (none
// until the informer has listed them). One that does not decode is left
// out, as the controller's typed informer leaves it out (both must decide
// alike: a port captured without a chain is closed), and logged once (not
// a policy diagnostic: nothing is enforced as deny because of it).
// Called under a.mu (as report).
func (a *Agent) destinationRules() []*networkingv1.DestinationRule {
	drs, bad := decodeDestinationRules(a.destRules.listed())
	now := map[string]bool{}
	for _, d := range bad {
		key := d.Namespace + "/" + d.Name + ": " + d.Message
		now[key] = true
		if !a.badDestRules[key] {
			a.log.Warn("DestinationRule cannot be read; no port is captured for Istio mTLS because of it", "namespace", d.Namespace, "name", d.Name, "error", d.Message)
		}
	}
	a.badDestRules = now
	return drs
}

func decodeDestinationRules(us []*unstructured.Unstructured) ([]*networkingv1.DestinationRule, []policy.Diagnostic) {
	var out []*networkingv1.DestinationRule
	var diags []policy.Diagnostic
	for _, u := range us {
		dr := &networkingv1.DestinationRule{}
		b, err := json.Marshal(u.Object)
		if err == nil {
			err = json.Unmarshal(b, dr)
		}
		if err != nil {
			diags = append(diags, policy.Diagnostic{Severity: policy.Warning, Kind: "DestinationRule", Namespace: u.GetNamespace(), Name: u.GetName(),
				Field: "spec", Message: err.Error()})
			continue
		}
		out = append(out, dr)
	}
	return out, diags
}

// capturedPorts are a pod's TCP ports the node Envoy's inbound listener
// captures (translate/authz.Capture, the controller's decision), sorted:
// relaxed are those captured for HTTP facts (the Envoy enforces every
// AuthorizationPolicy there, policy.Endpoint.Captured), mtlsOnly those
// captured only to terminate Istio mTLS (the gate keeps deciding them).
func capturedPorts(c *authz.Capture, r *endpointRecord, nsLabels map[string]string) (relaxed, mtlsOnly []uint16) {
	w := authz.Workload{Namespace: r.Namespace, Labels: r.Labels, Sidecar: r.Sidecar}
	for _, p := range r.Ports {
		w.NamedPorts = append(w.NamedPorts, authz.NamedPort{Name: p.Name, Port: int32(p.Port)})
	}
	for _, p := range c.Ports(w, nsLabels) {
		if p.Port == 0 || p.Port > 65535 {
			continue
		}
		if p.MTLSOnly {
			mtlsOnly = append(mtlsOnly, uint16(p.Port))
		} else {
			relaxed = append(relaxed, uint16(p.Port))
		}
	}
	slices.Sort(relaxed)
	slices.Sort(mtlsOnly)
	return slices.Compact(relaxed), slices.Compact(mtlsOnly)
}
