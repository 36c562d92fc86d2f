package istio

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/net/http/httpguts"
	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// RequestAuthnKind is the kind of RequestAuthentication model sources.
const RequestAuthnKind = "RequestAuthentication"

// RequestAuthentications translates Istio RequestAuthentications (v1 and
// v1beta1 decode to the same type) into the model, sorted by namespace and
// name, with istiod's validation (pkg/config/validation
// ValidateRequestAuthentication) as diagnostics naming the field. A rule
// that is invalid is kept with RejectTokens — its provider rejects every
// token at its locations — rather than dropped: dropping it would let
// tokens Istio rejects through (and a DENY on their principal not fire).
// One bad rule never affects the others. A resource whose scope cannot be
// known (selector with targetRefs, a targetRef elsewhere) applies to its
// whole namespace with every rule rejecting tokens: on the workloads it was
// not meant for, accepting the issuer's tokens would give them principals
// Istio never gives them.
func RequestAuthentications(ras []*securityv1.RequestAuthentication, opts AuthzOptions) ([]ir.RequestAuthn, ir.Diagnostics) {
	root := cmp.Or(opts.RootNamespace, authz.DefaultRootNamespace)
	sorted := slices.DeleteFunc(slices.Clone(ras), func(ra *securityv1.RequestAuthentication) bool { return ra == nil })
	slices.SortFunc(sorted, func(x, y *securityv1.RequestAuthentication) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	var out []ir.RequestAuthn
	var diags ir.Diagnostics
	for _, ra := range sorted {
		ref := ir.ResourceRef{Kind: RequestAuthnKind, Namespace: ra.Namespace, Name: ra.Name}
		spec := &ra.Spec
		scope, field, widened, applies := authz.TargetScope(ref, root, spec.GetSelector().GetMatchLabels(),
			spec.GetTargetRef(), spec.GetTargetRefs(), &diags)
		if !applies {
			continue
		}
		res := ir.RequestAuthn{Source: ref, Scope: scope}
		if widened != "" {
			diags.Warnf(ir.CodeDeniesMore, ref, field, "%s: the RequestAuthentication applies to every workload of its namespace and its rules reject every token", widened)
		}
		for i, r := range spec.GetJwtRules() {
			rule, ok := jwtRule(ref, "spec.jwtRules["+strconv.Itoa(i)+"]", r, &diags)
			if !ok || widened != "" {
				rule.RejectTokens = true
			}
			res.Rules = append(res.Rules, rule)
		}
		out = append(out, res)
	}
	return out, diags
}

// jwtRule validates one rule as istiod's validateJwtRule does (and what
// Envoy would refuse); false when the rule cannot be enforced as written.
func jwtRule(ref ir.ResourceRef, f string, r *securityapi.JWTRule, diags *ir.Diagnostics) (ir.JWTRule, bool) {
	out := ir.JWTRule{Field: f}
	if r == nil {
		diags.Errorf(ir.CodeInvalidValue, ref, f, "a JWT rule must not be null: its provider rejects every token")
		return out, false
	}
	ok := true
	bad := func(field, format string, args ...any) {
		diags.Errorf(ir.CodeInvalidValue, ref, field, format+": the rule rejects every token", args...)
		ok = false
	}
	out.Issuer = r.GetIssuer()
	out.ForwardOriginalToken = r.GetForwardOriginalToken()
	for j, a := range r.GetAudiences() {
		if a == "" {
			bad(fmt.Sprintf("%s.audiences[%d]", f, j), "an audience must not be empty")
			continue
		}
		out.Audiences = append(out.Audiences, a)
	}
	if r.GetIssuer() == "" && r.GetJwksUri() == "" {
		bad(f+".issuer", "issuer or jwksUri must be set")
	}
	if u := r.GetJwksUri(); u != "" {
		if err := checkJWKSURI(u); err != nil {
			bad(f+".jwksUri", "%v", err)
		} else {
			out.JWKSURI = u
		}
	}
	if k := r.GetJwks(); k != "" {
		keys, private, skipped, err := PublicJWKS(k)
		switch {
		case err != nil:
			bad(f+".jwks", "%v", err)
		default:
			out.JWKS = keys
			if skipped > 0 {
				diags.Warnf(ir.CodeDeniesMore, ref, f+".jwks", "%d key(s) do not parse and are left out: tokens they sign are rejected", skipped)
			}
			if private > 0 {
				diags.Warnf(ir.CodeInvalidValue, ref, f+".jwks", "%d key(s) hold private key material: only their public part is sent to Envoy", private)
			}
		}
		if out.JWKSURI != "" {
			diags.Infof(ir.CodeChangedBehavior, ref, f+".jwksUri", "jwks is set too: the inline key set is used and jwksUri is not fetched (as istiod)")
			out.JWKSURI = ""
		}
	}
	for j, h := range r.GetFromHeaders() {
		hf := fmt.Sprintf("%s.fromHeaders[%d]", f, j)
		switch {
		case h == nil || h.GetName() == "":
			bad(hf+".name", "a token header needs a name")
		case !httpguts.ValidHeaderFieldName(h.GetName()):
			bad(hf+".name", "%q is not an HTTP header name", h.GetName())
		case !httpguts.ValidHeaderFieldValue(h.GetPrefix()):
			bad(hf+".prefix", "%q is not a valid header value prefix", h.GetPrefix())
		default:
			out.FromHeaders = append(out.FromHeaders, ir.JWTHeader{Name: h.GetName(), Prefix: h.GetPrefix()})
		}
	}
	for j, p := range r.GetFromParams() {
		if p == "" {
			bad(fmt.Sprintf("%s.fromParams[%d]", f, j), "a query parameter name must not be empty")
			continue
		}
		out.FromParams = append(out.FromParams, p)
	}
	for j, c := range r.GetFromCookies() {
		if c == "" {
			bad(fmt.Sprintf("%s.fromCookies[%d]", f, j), "a cookie name must not be empty")
			continue
		}
		out.FromCookies = append(out.FromCookies, c)
	}
	if h := r.GetOutputPayloadToHeader(); h != "" {
		if !httpguts.ValidHeaderFieldName(h) {
			bad(f+".outputPayloadToHeader", "%q is not an HTTP header name", h)
		} else {
			out.OutputPayloadToHeader = h
		}
	}
	for j, c := range r.GetOutputClaimToHeaders() {
		cf := fmt.Sprintf("%s.outputClaimToHeaders[%d]", f, j)
		switch {
		case c == nil || c.GetClaim() == "" || c.GetHeader() == "":
			bad(cf, "header and claim must both be set")
		case !httpguts.ValidHeaderFieldName(c.GetHeader()):
			// Strict (no pseudo-headers such as :authority or :path),
			// as istiod's ValidateStrictHTTPHeaderName.
			bad(cf+".header", "%q is not an HTTP header name", c.GetHeader())
		default:
			out.OutputClaimToHeaders = append(out.OutputClaimToHeaders, ir.JWTClaimToHeader{Header: c.GetHeader(), Claim: c.GetClaim()})
		}
	}
	if t := r.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() <= 0 {
			bad(f+".timeout", "%s is not a positive duration", t.AsDuration())
		} else {
			out.Timeout = t.AsDuration()
		}
	}
	for j, c := range r.GetSpaceDelimitedClaims() {
		if c == "" {
			bad(fmt.Sprintf("%s.spaceDelimitedClaims[%d]", f, j), "a claim name must not be empty")
			continue
		}
		out.SpaceDelimitedClaims = append(out.SpaceDelimitedClaims, c)
	}
	if r.SpaceDelimitedClaims != nil && out.SpaceDelimitedClaims == nil {
		out.SpaceDelimitedClaims = []string{}
	}
	return out, ok
}

// checkJWKSURI is istiod's ParseJwksURI: an http or https URL with a host.
func checkJWKSURI(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("jwksUri does not parse: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("jwksUri scheme %q is not http or https", u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("jwksUri %q has no host", s)
	}
	if u.User != nil {
		return fmt.Errorf("jwksUri must not carry credentials")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("jwksUri port %q is not a port", p)
		}
	}
	return nil
}

// maxJWKSKeys bounds a key set: Envoy tries each key whose kid matches (or
// all, without one), so a huge set is a CPU cost per request.
const maxJWKSKeys = 100

// PublicJWKS parses a JSON Web Key Set (or a single JSON Web Key, which
// Envoy accepts too) and returns it as a key set of public keys: keys that
// carry private material are replaced by their public part (private counts
// them) — Envoy only needs public keys, and a private key must not travel
// to every node. Keys that do not parse are left out (skipped counts them:
// tokens they sign are rejected); a set without a usable key is an error
// (Envoy would reject it too).
func PublicJWKS(s string) (keys string, private, skipped int, err error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	trimmed := strings.TrimSpace(s)
	if err := json.Unmarshal([]byte(trimmed), &set); err != nil {
		return "", 0, 0, fmt.Errorf("jwks is not a JSON Web Key Set: %w", err)
	}
	if set.Keys == nil {
		// A single key.
		set.Keys = []json.RawMessage{json.RawMessage(trimmed)}
	}
	if len(set.Keys) > maxJWKSKeys {
		return "", 0, 0, fmt.Errorf("jwks holds %d keys, more than %d", len(set.Keys), maxJWKSKeys)
	}
	out := make([]json.RawMessage, 0, len(set.Keys))
	usable := 0
	for i, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			skipped++
			continue
		}
		if !k.Valid() {
			return "", 0, 0, fmt.Errorf("jwks key %d is not valid", i)
		}
		usable++
		if _, symmetric := k.Key.([]byte); symmetric || k.IsPublic() {
			out = append(out, raw)
			continue
		}
		private++
		pub := k.Public()
		b, err := pub.MarshalJSON()
		if err != nil {
			return "", 0, 0, fmt.Errorf("jwks key %d: %w", i, err)
		}
		out = append(out, b)
	}
	if usable == 0 {
		return "", 0, 0, fmt.Errorf("jwks holds no key")
	}
	b, err := json.Marshal(map[string][]json.RawMessage{"keys": out})
	if err != nil {
		return "", 0, 0, fmt.Errorf("jwks: %w", err)
	}
	return string(b), private, skipped, nil
}
