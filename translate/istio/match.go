package istio

import (
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// translateMatch is Istio's TranslateRouteMatch. A rule without match gets
// prefix "/" and no case flag; with a match, case sensitivity is always set.
func translateMatch(m *networking.HTTPMatchRequest) ir.RouteMatch {
	out := ir.RouteMatch{Path: ir.PathMatch{Prefix: "/"}}
	if m == nil {
		return out
	}
	for _, name := range sortedKeys(m.Headers) {
		out.Headers = append(out.Headers, headerMatch(name, m.Headers[name]))
	}
	for _, name := range sortedKeys(m.WithoutHeaders) {
		sm := m.WithoutHeaders[name]
		hm := headerMatch(name, sm)
		hm.Invert = true
		// treat_missing_header_as_empty conflicts with present_match.
		hm.TreatMissingAsEmpty = !hm.Present
		out.Headers = append(out.Headers, hm)
	}
	slices.SortStableFunc(out.Headers, func(a, b ir.HeaderMatch) int { return strings.Compare(a.Name, b.Name) })
	if u := m.Uri; u != nil {
		switch mt := u.MatchType.(type) {
		case *networking.StringMatch_Exact:
			out.Path = ir.PathMatch{Exact: mt.Exact}
		case *networking.StringMatch_Prefix:
			out.Path = ir.PathMatch{Prefix: mt.Prefix}
		case *networking.StringMatch_Regex:
			out.Path = ir.PathMatch{Regex: mt.Regex}
		}
	}
	cs := !m.IgnoreUriCase
	out.CaseSensitive = &cs
	if m.Method != nil {
		out.Headers = append(out.Headers, headerMatch(":method", m.Method))
	}
	if m.Authority != nil {
		out.Headers = append(out.Headers, headerMatch(":authority", m.Authority))
	}
	if m.Scheme != nil {
		out.Headers = append(out.Headers, headerMatch(":scheme", m.Scheme))
	}
	for _, name := range sortedKeys(m.QueryParams) {
		sm := m.QueryParams[name]
		qm := ir.QueryMatch{Name: name}
		if isPresentMatch(sm) {
			qm.Present = true
		} else {
			qm.Value = stringMatch(sm)
		}
		out.QueryParams = append(out.QueryParams, qm)
	}
	return out
}

func headerMatch(name string, sm *networking.StringMatch) ir.HeaderMatch {
	if isPresentMatch(sm) {
		return ir.HeaderMatch{Name: name, Present: true}
	}
	return ir.HeaderMatch{Name: name, Value: stringMatch(sm)}
}

// isPresentMatch: an empty StringMatch or the regex "*" means "present"
// (Istio's canBeConvertedToPresentMatch; "*" is not a valid RE2 anyway).
func isPresentMatch(sm *networking.StringMatch) bool {
	if sm == nil || sm.MatchType == nil {
		return true
	}
	r, ok := sm.MatchType.(*networking.StringMatch_Regex)
	return ok && r.Regex == "*"
}

func stringMatch(sm *networking.StringMatch) ir.StringMatch {
	switch mt := sm.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return ir.StringMatch{Exact: &mt.Exact}
	case *networking.StringMatch_Prefix:
		return ir.StringMatch{Prefix: &mt.Prefix}
	case *networking.StringMatch_Regex:
		return ir.StringMatch{Regex: &mt.Regex}
	}
	return ir.StringMatch{}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// isCatchAll is Istio's IsCatchAllRoute: prefix "/" or regex ".*" with no
// header or query condition. Nothing after it can match.
func isCatchAll(m ir.RouteMatch) bool {
	catchAll := m.Path.Prefix == "/" && m.Path.Exact == "" && m.Path.Regex == "" || m.Path.Regex == ".*"
	return catchAll && len(m.Headers) == 0 && len(m.QueryParams) == 0
}
