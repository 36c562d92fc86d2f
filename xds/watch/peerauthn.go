package watch

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// PeerAuthentication status (docs/design/policy.md §10): as for
// AuthorizationPolicy, the agents enforce, the controller sees the cluster
// and says on each PeerAuthentication, as Events, for which pods it decides
// the mode and where that is enforced — and how STRICT differs from
// Istio's. The reasons are AuthorizationPolicy's.

// peerAuthnKind is the kind of PeerAuthentication Events.
const peerAuthnKind = "PeerAuthentication"

// strictDiffers is what STRICT enforced by attested identity differs in.
const strictDiffers = "peers that are not pods of the cluster are refused; pods of the cluster are admitted by their attested identity, " +
	"without mTLS on the wire — and so are the node and pods outside the mesh, whose plaintext Istio refuses"

// peerAuthnEvents are the Events that describe the policies' status.
func peerAuthnEvents(sts []translate.PeerAuthnStatus, diags ir.Diagnostics) []authzEvent {
	var out []authzEvent
	for _, st := range sts {
		var parts []string
		reason := ReasonEnforced
		switch {
		case st.Strict > 0:
			parts = append(parts, "STRICT enforced in eBPF for "+pods(st.Strict)+onNodes(st.Nodes)+": "+strictDiffers)
			if rest := st.Nodemesh - st.Strict; rest > 0 {
				parts = append(parts, "no STRICT port for "+pods(rest)+": nothing to enforce")
			}
		case st.Nodemesh > 0:
			reason = ReasonNotEnforced
			parts = append(parts, "no STRICT port for "+pods(st.Nodemesh)+onNodes(st.Nodes)+": PERMISSIVE and DISABLE refuse nothing")
		case st.Sidecar > 0:
			reason = ReasonLeftToSidecars
		case st.None > 0:
			reason = ReasonOutsideMesh
		default:
			reason = ReasonNoPods
			parts = append(parts, "decides for no pod (none selected, or a narrower policy decides)")
		}
		if st.Sidecar > 0 {
			parts = append(parts, "left to the sidecars of "+pods(st.Sidecar))
		}
		if st.None > 0 {
			parts = append(parts, pods(st.None)+" outside the mesh: nobody authenticates them")
		}
		out = append(out, authzEvent{ref: st.Policy, typ: corev1.EventTypeNormal, reason: reason, message: strings.Join(parts, "; ")})
	}
	for _, d := range diags {
		msg := d.Message
		if d.Field != "" {
			msg = d.Field + ": " + msg
		}
		out = append(out, authzEvent{ref: d.Resource, typ: corev1.EventTypeWarning, reason: string(d.Code), message: msg})
	}
	return out
}
