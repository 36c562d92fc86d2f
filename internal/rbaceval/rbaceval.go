// Package rbaceval evaluates Envoy HTTP RBAC filters against a request, as
// Envoy's RBAC engine does (source/extensions/filters/common/rbac), for the
// matchers nodemesh emits. No Envoy binary runs in the tests; this is how
// they show that a served filter chain allows and denies what it should. A
// matcher it does not know is an error, never a guess.
//
// It imports go-control-plane's types and the standard library only.
package rbaceval

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Request is what the RBAC engine reads of an HTTP request and its
// connection.
type Request struct {
	Method, Path, Host string
	// Headers are lower-case names (pseudo-headers are filled from Method,
	// Path and Host).
	Headers map[string]string
	// Source is the connection's peer address (direct_remote_ip; also
	// remote_ip, as no x-forwarded-for is trusted), Destination the
	// address and port it connected to.
	Source, Destination netip.Addr
	DestinationPort     uint32
	// Principal is the peer certificate's URI SAN; "" without TLS.
	Principal string
}

func (r *Request) header(name string) (string, bool) {
	switch strings.ToLower(name) {
	case ":method":
		return r.Method, true
	case ":path":
		return r.Path, true
	case ":authority", "host":
		return r.Host, true
	}
	v, ok := r.Headers[strings.ToLower(name)]
	return v, ok
}

// Allowed runs the filters in order, as an HTTP filter chain does: a
// request is allowed when none denies it. Shadow rules and LOG filters
// decide nothing.
func Allowed(filters []*rbachttpv3.RBAC, r *Request) (bool, error) {
	for _, f := range filters {
		rules := f.GetRules()
		if rules == nil {
			continue
		}
		matched := false
		for _, p := range rules.GetPolicies() {
			ok, err := policy(p, r)
			if err != nil {
				return false, err
			}
			if ok {
				matched = true
				break
			}
		}
		switch rules.GetAction() {
		case rbacv3.RBAC_ALLOW:
			if !matched {
				return false, nil
			}
		case rbacv3.RBAC_DENY:
			if matched {
				return false, nil
			}
		case rbacv3.RBAC_LOG:
		default:
			return false, fmt.Errorf("unknown RBAC action %v", rules.GetAction())
		}
	}
	return true, nil
}

func policy(p *rbacv3.Policy, r *Request) (bool, error) {
	if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
		return false, fmt.Errorf("CEL conditions are not evaluated")
	}
	perm := false
	for _, pe := range p.GetPermissions() {
		ok, err := permission(pe, r)
		if err != nil {
			return false, err
		}
		if ok {
			perm = true
			break
		}
	}
	if !perm {
		return false, nil
	}
	for _, pr := range p.GetPrincipals() {
		ok, err := principal(pr, r)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func permission(p *rbacv3.Permission, r *Request) (bool, error) {
	switch rule := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return rule.Any, nil
	case *rbacv3.Permission_AndRules:
		for _, q := range rule.AndRules.GetRules() {
			if ok, err := permission(q, r); err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case *rbacv3.Permission_OrRules:
		for _, q := range rule.OrRules.GetRules() {
			if ok, err := permission(q, r); err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case *rbacv3.Permission_NotRule:
		ok, err := permission(rule.NotRule, r)
		return !ok, err
	case *rbacv3.Permission_Header:
		return header(rule.Header, r)
	case *rbacv3.Permission_UrlPath:
		path, _, _ := strings.Cut(r.Path, "?")
		return stringMatch(rule.UrlPath.GetPath(), path)
	case *rbacv3.Permission_DestinationPort:
		return rule.DestinationPort == r.DestinationPort, nil
	case *rbacv3.Permission_DestinationIp:
		return cidr(rule.DestinationIp, r.Destination)
	case *rbacv3.Permission_Metadata:
		return metadata(rule.Metadata)
	}
	return false, fmt.Errorf("permission %T is not evaluated", p.GetRule())
}

func principal(p *rbacv3.Principal, r *Request) (bool, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return id.Any, nil
	case *rbacv3.Principal_AndIds:
		for _, q := range id.AndIds.GetIds() {
			if ok, err := principal(q, r); err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case *rbacv3.Principal_OrIds:
		for _, q := range id.OrIds.GetIds() {
			if ok, err := principal(q, r); err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case *rbacv3.Principal_NotId:
		ok, err := principal(id.NotId, r)
		return !ok, err
	case *rbacv3.Principal_Authenticated_:
		if r.Principal == "" {
			return false, nil // no TLS peer: Envoy's matcher fails
		}
		if id.Authenticated.GetPrincipalName() == nil {
			return true, nil
		}
		return stringMatch(id.Authenticated.GetPrincipalName(), r.Principal)
	case *rbacv3.Principal_DirectRemoteIp:
		return cidr(id.DirectRemoteIp, r.Source)
	case *rbacv3.Principal_RemoteIp:
		return cidr(id.RemoteIp, r.Source)
	case *rbacv3.Principal_Header:
		return header(id.Header, r)
	case *rbacv3.Principal_Metadata:
		return metadata(id.Metadata)
	}
	return false, fmt.Errorf("principal %T is not evaluated", p.GetIdentifier())
}

// metadata: nodemesh configures no filter that writes dynamic metadata
// (jwt_authn is not configured yet), so a metadata matcher finds nothing.
func metadata(m *matcherv3.MetadataMatcher) (bool, error) { return m.GetInvert(), nil }

func header(h *routev3.HeaderMatcher, r *Request) (bool, error) {
	v, present := r.header(h.GetName())
	var ok bool
	switch m := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		ok = present == m.PresentMatch
	case *routev3.HeaderMatcher_StringMatch:
		if present {
			var err error
			if ok, err = stringMatch(m.StringMatch, v); err != nil {
				return false, err
			}
		}
	case nil:
		ok = present
	default:
		return false, fmt.Errorf("header matcher %T is not evaluated", m)
	}
	if h.GetInvertMatch() {
		return !ok, nil
	}
	return ok, nil
}

func stringMatch(m *matcherv3.StringMatcher, v string) (bool, error) {
	if m.GetIgnoreCase() {
		v = strings.ToLower(v)
	}
	lower := func(s string) string {
		if m.GetIgnoreCase() {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return v == lower(p.Exact), nil
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(v, lower(p.Prefix)), nil
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(v, lower(p.Suffix)), nil
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(v, lower(p.Contains)), nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return false, err
		}
		return re.MatchString(v), nil
	}
	return false, fmt.Errorf("string matcher %T is not evaluated", m.GetMatchPattern())
}

func cidr(c *corev3.CidrRange, a netip.Addr) (bool, error) {
	addr, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return false, err
	}
	bits := int(c.GetPrefixLen().GetValue())
	pfx, err := addr.Prefix(bits)
	if err != nil {
		return false, err
	}
	return a.IsValid() && pfx.Contains(a.Unmap()), nil
}
