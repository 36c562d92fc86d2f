package ir

import "strings"

// PolicyLayer is the back end a fact needs: L4 facts are enforced in eBPF at
// the pods' veths, L7 facts by the destination node's Envoy.
type PolicyLayer string

// Policy layers.
const (
	LayerL4 PolicyLayer = "L4"
	LayerL7 PolicyLayer = "L7"
)

// Layer is L7 when the match has a request condition.
func (m *PolicyMatch) Layer() PolicyLayer {
	if len(m.L7) > 0 {
		return LayerL7
	}
	return LayerL4
}

// Layer is L7 when any match of the rule needs L7.
func (r *PolicyRule) Layer() PolicyLayer {
	for _, c := range r.Clauses {
		for i := range c.Matches {
			if c.Matches[i].Layer() == LayerL7 {
				return LayerL7
			}
		}
	}
	return LayerL4
}

// Denies reports whether the action's rules deny: the direction in which a
// condition that cannot be evaluated must widen a match instead of
// narrowing it.
func (a PolicyAction) Denies() bool { return a == PolicyDeny }

// Restrict returns r as a back end enforces it when it cannot evaluate some
// fields of a match: strip removes those fields from the match it is given
// and names them (nil: the match is fine). This is the one rule that keeps
// every degradation on the side of denying more:
//
//   - for a deny, the match keeps its other fields and so matches more (a
//     match left without fields matches every flow);
//   - for an allow (or an audit, whose matches change nothing), the match
//     matches nothing: it is removed from its clause, and a clause left
//     without matches makes the rule match nothing.
//
// Each affected match adds a degradation to the returned rule; what says
// why the fields cannot be evaluated. r is not modified.
func Restrict(action PolicyAction, src ResourceRef, r PolicyRule, what string, strip func(m *PolicyMatch) []string) PolicyRule {
	out := r
	out.Clauses = make([]PolicyClause, 0, len(r.Clauses))
	out.Degradations = append([]Degradation(nil), r.Degradations...)
	for _, c := range r.Clauses {
		var kept []PolicyMatch
		for _, m := range c.Matches {
			m := m
			dropped := strip(&m)
			if len(dropped) == 0 {
				kept = append(kept, m)
				continue
			}
			field := m.Field
			if field == "" {
				field = r.Field
			}
			fields := strings.Join(dropped, ", ")
			if action.Denies() {
				out.Degradations = append(out.Degradations, Degradation{Instead: FallbackMatchMore, Diagnostic: Diagnostic{
					Severity: SeverityWarning, Code: CodeDeniesMore, Resource: src, Field: field,
					Message: what + " (" + fields + "): the deny ignores them and matches more"}})
				kept = append(kept, m)
				continue
			}
			out.Degradations = append(out.Degradations, Degradation{Instead: FallbackMatchNothing, Diagnostic: Diagnostic{
				Severity: SeverityWarning, Code: CodeDeniesMore, Resource: src, Field: field,
				Message: what + " (" + fields + "): the " + strings.ToLower(string(action)) + " never matches"}})
		}
		out.Clauses = append(out.Clauses, PolicyClause{Field: c.Field, Matches: kept})
	}
	return out
}

// ProjectL4 is the rule as eBPF enforces it on a port whose traffic the
// node Envoy does not see (a TCP port, or a pod whose inbound traffic is
// not captured): Istio's behaviour for a TCP port — an allow (or audit)
// rule with a request condition anywhere never matches, not even through
// its other alternatives (istiod's TCP filter and ztunnel leave such a
// rule out), a deny rule ignores its request conditions
// (docs/design/policy.md §5).
func ProjectL4(action PolicyAction, src ResourceRef, r PolicyRule) PolicyRule {
	if r.Layer() == LayerL4 {
		return r
	}
	const what = "request conditions cannot be enforced without the node Envoy"
	if action.Denies() {
		return Restrict(action, src, r, what, stripL7)
	}
	var names []string
	for _, c := range r.Clauses {
		for _, m := range c.Matches {
			names = append(names, stripL7(&m)...)
		}
	}
	out := r
	out.Clauses = []PolicyClause{{Field: r.Field}}
	out.Degradations = append(append([]Degradation(nil), r.Degradations...), Degradation{Instead: FallbackMatchNothing, Diagnostic: Diagnostic{
		Severity: SeverityWarning, Code: CodeDeniesMore, Resource: src, Field: r.Field,
		Message: what + " (" + strings.Join(dedupeNames(names), ", ") + "): the " + strings.ToLower(string(action)) + " rule never matches"}})
	return out
}

func dedupeNames(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range in {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

func stripL7(m *PolicyMatch) []string {
	if len(m.L7) == 0 {
		return nil
	}
	var names []string
	seen := map[string]bool{}
	for _, c := range m.L7 {
		n := string(c.Attribute)
		if c.Name != "" {
			n += "[" + c.Name + "]"
		}
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	m.L7 = nil
	return names
}
