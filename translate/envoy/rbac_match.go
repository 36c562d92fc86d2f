package envoy

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// The RBAC form of each fact of a match, as istiod writes it
// (pilot/pkg/security/authz/model and matcher): every field given is one
// conjunct, an OR of its values; its Not* form a notId/notRule of that OR.

const spiffePrefix = "spiffe://"

// globMatcher is Istio's StringMatcher for an authorization value with a
// literal prefix (spiffe:// for principals): "*" is any non-empty value,
// "x*" a prefix, "*x" a suffix (a regular expression when there is a
// literal prefix to keep), anything else exact.
func globMatcher(g ir.Glob, prefix string) *matcherv3.StringMatcher {
	v := string(g)
	switch {
	case v == "*":
		return regexMatcher(".+")
	case strings.HasPrefix(v, "*"):
		if prefix == "" {
			return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}}
		}
		return regexMatcher(regexp.QuoteMeta(prefix) + ".*" + regexp.QuoteMeta(v[1:]))
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix + v[:len(v)-1]}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: prefix + v}}
}

func regexMatcher(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

func authenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

// namespaceRegex matches a principal of namespace ns (a glob).
func namespaceRegex(g ir.Glob) *matcherv3.StringMatcher {
	parts := strings.Split(string(g), "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexMatcher(".*/ns/" + strings.Join(parts, ".*") + "/.*")
}

// trustDomainMatcher matches a principal of trust domain td (a glob).
func trustDomainMatcher(g ir.Glob) *matcherv3.StringMatcher {
	v := string(g)
	switch {
	case v == "*":
		return regexMatcher(regexp.QuoteMeta(spiffePrefix) + "[^/]+/.*")
	case strings.HasSuffix(v, "*"):
		return regexMatcher(regexp.QuoteMeta(spiffePrefix+v[:len(v)-1]) + "[^/]*/.*")
	case strings.HasPrefix(v, "*"):
		return regexMatcher(regexp.QuoteMeta(spiffePrefix) + "[^/]*" + regexp.QuoteMeta(v[1:]) + "/.*")
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: spiffePrefix + v + "/"}}
}

func cidr(s string) (*corev3.CidrRange, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", s, err)
	}
	return cidrOf(p), nil
}

func cidrOf(p netip.Prefix) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}

// headerMatcher is Istio's HeaderMatcher: "*" is presence.
func headerMatcher(name string, g ir.Glob, ignoreCase bool) *routev3.HeaderMatcher {
	v := string(g)
	if v == "*" {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	sm := globMatcher(g, "")
	sm.IgnoreCase = ignoreCase
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

// jwtMetadata matches a claim of the JWT payload jwt_authn verified.
func jwtMetadata(path []string, v *matcherv3.ValueMatcher) *matcherv3.MetadataMatcher {
	m := &matcherv3.MetadataMatcher{Filter: jwtFilter, Value: v}
	for _, k := range append([]string{"payload"}, path...) {
		m.Path = append(m.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	return m
}

func stringValue(m *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}}
}

// listValue matches a claim that is a string or a list holding the value.
func listValue(m *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{
		stringValue(m),
		{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: stringValue(m)}}}},
	}}}}
}

func metadataID(m *matcherv3.MetadataMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: m}}
}

// requestPrincipal matches a request principal glob against the token
// jwt_authn verified. Istio's principal is "iss/sub", and both may hold a
// "/" (an issuer is usually a URL): istiod splits the value at its last
// "/" only, so "https://idp/users/alice" never matches sub "users/alice" of
// issuer "https://idp" — and a DENY naming it does not fire. nodemesh
// matches the principal exactly: an OR over every split at a "/" (for a
// glob, every way the iss/sub boundary can fall inside or outside the
// literal part), the first alternative being istiod's own, so that a value
// with at most one split renders exactly as istiod's (the oracle tests
// compare them). A value without "/" keeps istiod's iss-only form.
func requestPrincipal(g ir.Glob) *rbacv3.Principal {
	v := string(g)
	alts := []*rbacv3.Principal{istiodRequestPrincipal(v)}
	if v != "*" && strings.Contains(v, "/") {
		// In the alternatives beyond istiod's, a side the glob leaves
		// free is any value (present), an empty one included.
		present := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}
		str := func(m *matcherv3.StringMatcher) *matcherv3.ValueMatcher { return stringValue(m) }
		exact := func(s string) *matcherv3.ValueMatcher {
			return str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}})
		}
		// splits calls f with every position of a "/" in s but the last
		// (istiod's alternative covers that one).
		splits := func(s string, f func(k int)) {
			last := strings.LastIndex(s, "/")
			for k := 0; k < last; k++ {
				if s[k] == '/' {
					f(k)
				}
			}
		}
		switch {
		case strings.HasPrefix(v, "*"): // the principal ends with s
			s := v[1:]
			// The boundary is before s: sub ends with s.
			alts = append(alts, issSubValues(present, str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s}})))
			splits(s, func(k int) {
				iss := present // "*/…": any issuer
				if k > 0 {
					iss = str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s[:k]}})
				}
				alts = append(alts, issSubValues(iss, exact(s[k+1:])))
			})
		case strings.HasSuffix(v, "*"): // the principal starts with s
			s := v[:len(v)-1]
			// The boundary is after s: iss starts with s.
			alts = append(alts, issSubValues(str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}), present))
			splits(s, func(k int) {
				alts = append(alts, issSubValues(exact(s[:k]), str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s[k+1:]}})))
			})
		default:
			splits(v, func(k int) { alts = append(alts, issSubValues(exact(v[:k]), exact(v[k+1:]))) })
		}
	}
	if len(alts) == 1 {
		return alts[0]
	}
	return orIds(alts)
}

// istiodRequestPrincipal is istiod's iss/sub pair for a request principal
// glob (pilot/pkg/security/authz/model requestPrincipalGenerator): the
// value split at its last "/".
func istiodRequestPrincipal(v string) *rbacv3.Principal {
	any := regexMatcher(".+")
	exact := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
	}
	idx := strings.LastIndex(v, "/")
	found := idx >= 0
	iss, sub := v, ""
	if found {
		iss, sub = v[:idx], v[idx+1:]
	}
	var mi, ms *matcherv3.StringMatcher
	switch {
	case v == "*":
		mi, ms = any, any
	case strings.HasPrefix(v, "*"):
		if found {
			mi = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: strings.TrimPrefix(iss, "*")}}
			if iss == "*" {
				mi = any
			}
			ms = exact(sub)
		} else {
			mi, ms = any, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}}
		}
	case strings.HasSuffix(v, "*"):
		if found {
			mi = exact(iss)
			ms = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: strings.TrimSuffix(sub, "*")}}
			if sub == "*" {
				ms = any
			}
		} else {
			mi, ms = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v[:len(v)-1]}}, any
		}
	default:
		mi, ms = exact(iss), exact(sub)
	}
	return issSub(mi, ms)
}

func issSub(iss, sub *matcherv3.StringMatcher) *rbacv3.Principal {
	return issSubValues(stringValue(iss), stringValue(sub))
}

func issSubValues(iss, sub *matcherv3.ValueMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
		metadataID(jwtMetadata([]string{"iss"}, iss)),
		metadataID(jwtMetadata([]string{"sub"}, sub)),
	}}}}
}

// principalsOf renders the peer-side facts of a match, one conjunct each.
func principalsOf(m *ir.PolicyMatch) []*rbacv3.Principal {
	var out []*rbacv3.Principal
	globs := func(gs []ir.Glob, f func(ir.Glob) *rbacv3.Principal, not bool) {
		if len(gs) == 0 {
			return
		}
		ids := make([]*rbacv3.Principal, 0, len(gs))
		for _, g := range gs {
			ids = append(ids, f(g))
		}
		if not {
			out = append(out, notID(orIds(ids)))
		} else {
			out = append(out, orIds(ids))
		}
	}
	principal := func(g ir.Glob) *rbacv3.Principal { return authenticated(globMatcher(g, spiffePrefix)) }
	namespace := func(g ir.Glob) *rbacv3.Principal { return authenticated(namespaceRegex(g)) }
	trustDomain := func(g ir.Glob) *rbacv3.Principal { return authenticated(trustDomainMatcher(g)) }
	globs(m.Principals, principal, false)
	globs(m.NotPrincipals, principal, true)
	globs(m.Namespaces, namespace, false)
	globs(m.NotNamespaces, namespace, true)
	globs(m.TrustDomains, trustDomain, false)
	globs(m.NotTrustDomains, trustDomain, true)
	blocks := func(bs []ir.IPBlock, not bool) {
		if len(bs) == 0 {
			return
		}
		var ids []*rbacv3.Principal
		for _, b := range bs {
			id := &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidrOf(b.CIDR)}}
			if len(b.Except) > 0 {
				var ex []*rbacv3.Principal
				for _, e := range b.Except {
					ex = append(ex, &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidrOf(e)}})
				}
				id = &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{id, notID(orIds(ex))}}}}
			}
			ids = append(ids, id)
		}
		if not {
			out = append(out, notID(orIds(ids)))
		} else {
			out = append(out, orIds(ids))
		}
	}
	blocks(m.IPBlocks, false)
	blocks(m.NotIPBlocks, true)
	for _, c := range m.L7 {
		var f func(ir.Glob) *rbacv3.Principal
		switch c.Attribute {
		case ir.L7RequestPrincipal:
			f = requestPrincipal
		case ir.L7RemoteIP:
			f = func(g ir.Glob) *rbacv3.Principal {
				r, err := cidr(string(g))
				if err != nil { // the translator normalised it; never allow on a bad one
					return notID(princAny())
				}
				return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: r}}
			}
		case ir.L7Header:
			f = func(g ir.Glob) *rbacv3.Principal {
				return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: headerMatcher(c.Name, g, false)}}
			}
		case ir.L7Claim:
			f = func(g ir.Glob) *rbacv3.Principal {
				return metadataID(jwtMetadata(c.Path, listValue(globMatcher(g, ""))))
			}
		case ir.L7Audience:
			f = func(g ir.Glob) *rbacv3.Principal {
				return metadataID(jwtMetadata([]string{"aud"}, listValue(globMatcher(g, ""))))
			}
		case ir.L7Presenter:
			f = func(g ir.Glob) *rbacv3.Principal {
				return metadataID(jwtMetadata([]string{"azp"}, listValue(globMatcher(g, ""))))
			}
		default:
			continue // request side (matchSide keeps them apart)
		}
		globs(c.Values, f, false)
		globs(c.NotValues, f, true)
	}
	return out
}

// permissionsOf renders the request-side facts of a match.
func permissionsOf(m *ir.PolicyMatch) ([]*rbacv3.Permission, error) {
	var out []*rbacv3.Permission
	var err error
	add := func(rs []*rbacv3.Permission, not bool) {
		if len(rs) == 0 {
			return
		}
		if not {
			out = append(out, notRule(orRules(rs)))
		} else {
			out = append(out, orRules(rs))
		}
	}
	ports := func(ps []ir.PortMatch) []*rbacv3.Permission {
		var rs []*rbacv3.Permission
		for _, p := range ps {
			switch {
			case p.Name != "":
				err = fmt.Errorf("named port %q has no RBAC form", p.Name)
			case p.EndPort > p.Port:
				rs = append(rs, &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: int32(p.Port), End: int32(p.EndPort) + 1}}})
			case p.Port == 0:
				rs = append(rs, permAny())
			default:
				rs = append(rs, &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(p.Port)}})
			}
		}
		return rs
	}
	add(ports(m.Ports), false)
	add(ports(m.NotPorts), true)
	for _, c := range m.L7 {
		var f func(ir.Glob) *rbacv3.Permission
		switch c.Attribute {
		case ir.L7Host:
			f = func(g ir.Glob) *rbacv3.Permission {
				return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: headerMatcher(":authority", g, true)}}
			}
		case ir.L7Method:
			f = func(g ir.Glob) *rbacv3.Permission {
				return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: headerMatcher(":method", g, false)}}
			}
		case ir.L7Path:
			f = pathPermission
		case ir.L7SNI:
			f = func(g ir.Glob) *rbacv3.Permission {
				return &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: globMatcher(g, "")}}
			}
		case ir.L7DestinationIP:
			f = func(g ir.Glob) *rbacv3.Permission {
				r, cerr := cidr(string(g))
				if cerr != nil {
					err = cerr
					return permAny()
				}
				return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: r}}
			}
		case ir.L7Metadata:
			if len(c.Path) == 0 || c.Name == "" {
				return nil, fmt.Errorf("metadata condition without filter or key")
			}
			f = func(g ir.Glob) *rbacv3.Permission {
				mm := &matcherv3.MetadataMatcher{Filter: c.Name, Value: stringValue(globMatcher(g, ""))}
				for _, k := range c.Path {
					mm.Path = append(mm.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
				}
				return &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: mm}}
			}
		default:
			continue
		}
		var vs, ns []*rbacv3.Permission
		for _, g := range c.Values {
			vs = append(vs, f(g))
		}
		for _, g := range c.NotValues {
			ns = append(ns, f(g))
		}
		add(vs, false)
		add(ns, true)
	}
	return out, err
}

// pathPermission is istiod's path matcher: globs on the normalised path,
// and {*}/{**} templates as Envoy's uri_template matcher.
func pathPermission(g ir.Glob) *rbacv3.Permission {
	v := string(g)
	if strings.Contains(v, "{*") {
		tmpl := strings.ReplaceAll(strings.ReplaceAll(v, "{**}", "**"), "{*}", "*")
		a, err := anypb.New(&uritemplatev3.UriTemplateMatchConfig{PathTemplate: tmpl})
		if err != nil {
			return notRule(permAny())
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{Name: "uri-template", TypedConfig: a}}}
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: globMatcher(g, "")}}}}
}
