package mapsync

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/nodemesh/nodemesh/bpf"
)

// Apply performs the plan's writes in order and stops at the first error.
// Every prefix of a plan is a safe state (no flow allowed that neither the
// old nor the new state allows), so a plan cut short by an error leaves the
// datapath safe; the next sync plans again from what the maps hold.
func Apply(w Writer, p Plan) error {
	for _, op := range p.Ops {
		if err := op.apply(w); err != nil {
			return fmt.Errorf("%s: %w", op.Phase, err)
		}
	}
	return nil
}

func (op Op) apply(w Writer) error {
	switch op.Kind {
	case PutPolicies:
		return w.PutPolicies(op.Keys, op.Verdicts)
	case DeletePolicies:
		return w.DeletePolicies(op.Keys)
	case PutPortRanges:
		return w.PutPortRanges(op.RangeKeys, op.Verdicts)
	case DeletePortRanges:
		return w.DeletePortRanges(op.RangeKeys)
	case PutIdentity:
		return w.PutIdentity(op.Prefix, op.Identity)
	case DeleteIdentity:
		return w.DeleteIdentity(op.Prefix)
	case PutEndpoint:
		return w.PutEndpoint(op.Ifindex, op.Endpoint)
	case DeleteEndpoint:
		return w.DeleteEndpoint(op.Ifindex)
	case PutLocalEndpoint:
		return w.PutLocalEndpoint(op.Endpoint, op.NetnsCookie)
	case DeleteLocalEndpoint:
		return w.DeleteLocalEndpoint(op.IP)
	}
	return fmt.Errorf("unknown write kind %d", op.Kind)
}

// Writes counts the map entries the plan writes or deletes.
func (p Plan) Writes() int {
	n := 0
	for _, op := range p.Ops {
		if op.Kind == PutPolicies || op.Kind == DeletePolicies {
			n += len(op.Keys)
			continue
		}
		if op.Kind == PutPortRanges || op.Kind == DeletePortRanges {
			n += len(op.RangeKeys)
			continue
		}
		n++
	}
	return n
}

// String renders a write for logs and tests, one line per map entry:
//
//	restrict: policy 300 ingress 301 80/6 = deny
//	switch: identity 10.0.0.5/32 = 300
//	finalize: endpoint 7 = 10.0.0.5 id 300 flags 1 rev 3
func (op Op) String() string {
	var b strings.Builder
	line := func(format string, args ...any) {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(op.Phase.String() + ": ")
		fmt.Fprintf(&b, format, args...)
	}
	ep := func(e bpf.Endpoint) string {
		return fmt.Sprintf("%s id %d flags %d rev %d", netip.AddrFrom4(e.IP), e.Identity, e.Flags, e.PolicyRevision)
	}
	switch op.Kind {
	case PutPolicies:
		for i, k := range op.Keys {
			line("policy %s = %s", keyString(k), op.Verdicts[i])
		}
	case DeletePolicies:
		for _, k := range op.Keys {
			line("policy %s deleted", keyString(k))
		}
	case PutPortRanges:
		for i, k := range op.RangeKeys {
			line("range %s = %s", rangeString(k), op.Verdicts[i])
		}
	case DeletePortRanges:
		for _, k := range op.RangeKeys {
			line("range %s deleted", rangeString(k))
		}
	case PutIdentity:
		line("identity %s = %d", op.Prefix, op.Identity)
	case DeleteIdentity:
		line("identity %s deleted", op.Prefix)
	case PutEndpoint:
		line("endpoint %d = %s", op.Ifindex, ep(op.Endpoint))
	case DeleteEndpoint:
		line("endpoint %d deleted", op.Ifindex)
	case PutLocalEndpoint:
		line("local %s = %s cookie %d", netip.AddrFrom4(op.Endpoint.IP), ep(op.Endpoint), op.NetnsCookie)
	case DeleteLocalEndpoint:
		line("local %s deleted", netip.AddrFrom4(op.IP))
	default:
		line("unknown write kind %d", op.Kind)
	}
	return b.String()
}

func keyString(k bpf.PolicyKey) string {
	return fmt.Sprintf("%d %s %d %d/%d", k.Endpoint, k.Dir, k.Peer, k.Port, k.Proto)
}

func rangeString(k bpf.PortRangeKey) string {
	return fmt.Sprintf("%d %s %d %s/%d", k.Endpoint, k.Dir, k.Peer, k.Block, k.Proto)
}

// Lines renders the plan, one line per map entry; the entries of a batch
// (in no particular order in the plan) sorted.
func (p Plan) Lines() []string {
	var out []string
	for _, op := range p.Ops {
		lines := strings.Split(op.String(), "\n")
		slices.Sort(lines)
		out = append(out, lines...)
	}
	return out
}
