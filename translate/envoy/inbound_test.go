package envoy

import (
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// TestInboundValidation: the inbound listener is validated like every
// resource — an inline route to a cluster that does not exist withholds
// the chain (its connections are then closed), a chain without a pod
// address is refused (it would match every pod's port), and a good one
// passes with its ORIGINAL_DST cluster.
func TestInboundValidation(t *testing.T) {
	pod := ir.ResourceRef{Kind: "Pod", Namespace: "shop", Name: "web"}
	good := InboundChain{Pod: pod, Addresses: []string{"10.0.0.10"}, Port: 8080, Protocol: ir.ProtocolHTTP}
	r, diags := BuildInbound([]InboundChain{good})
	if diags.HasErrors() || len(r.Listeners) != 1 || len(r.Listeners[0].GetFilterChains()) != 1 || len(r.Clusters) != 1 {
		t.Fatalf("a good chain: %v, %v", r, diags)
	}
	l := r.Listeners[0]
	var lf []string
	for _, f := range l.GetListenerFilters() {
		lf = append(lf, f.GetName())
	}
	if strings.Join(lf, " ") != "envoy.filters.listener.original_dst envoy.filters.listener.original_src" ||
		!l.GetTransparent().GetValue() || l.GetAddress().GetSocketAddress().GetPortValue() != 15006 {
		t.Errorf("listener filters %v, transparent %v, address %v: want original_dst and original_src (the pod sees its client), transparent, :15006", lf, l.GetTransparent(), l.GetAddress())
	}
	if r.Listeners[0].GetDefaultFilterChain() != nil {
		t.Error("a default chain: an unmatched captured connection must be closed")
	}
	// Its cluster removed: the inline route points nowhere.
	r.Clusters = nil
	problems := Validate(r)
	if len(problems) == 0 || !strings.Contains(problems[0].String(), `cluster "inbound|8080||" does not exist`) {
		t.Errorf("an inline route to a missing cluster: %v", problems)
	}
	_, diags = BuildInbound([]InboundChain{{Pod: pod, Port: 8080, Protocol: ir.ProtocolHTTP}})
	if !diags.HasErrors() {
		t.Error("a chain without an address is not refused")
	}
	if r, _ := BuildInbound(nil); len(r.Listeners) != 0 || len(r.Clusters) != 0 {
		t.Error("a listener without chains")
	}
}
