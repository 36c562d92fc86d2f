package ir

import "time"

// RequestAuthn is one Istio RequestAuthentication in the model: the JWT
// rules (one Envoy jwt_authn provider each) that the workloads of its scope
// check on their inbound HTTP ports. A request with a token at a rule's
// locations that does not verify is rejected (401); a request without one
// passes authentication, and authorization decides (Istio's semantics,
// docs/design/policy.md §9).
type RequestAuthn struct {
	Source ResourceRef `json:"source"`
	// Scope has AuthorizationPolicy's applicability rules: root namespace,
	// namespace, selector, targetRefs to Services.
	Scope PolicyScope `json:"scope"`
	Rules []JWTRule   `json:"rules,omitempty"`
}

// JWTRule is one spec.jwtRules entry, validated.
type JWTRule struct {
	// Field is the rule's field path (spec.jwtRules[i]).
	Field     string   `json:"field"`
	Issuer    string   `json:"issuer,omitempty"`
	Audiences []string `json:"audiences,omitempty"`
	// JWKSURI is fetched by the controller (Istio's default,
	// PILOT_JWT_ENABLE_REMOTE_JWKS=false); JWKS is an inline key set. With
	// neither, the issuer's OpenID discovery document names the URI.
	JWKSURI string `json:"jwksUri,omitempty"`
	JWKS    string `json:"jwks,omitempty"`
	// Token locations; none: Envoy's defaults (Authorization: Bearer, the
	// access_token query parameter).
	FromHeaders []JWTHeader `json:"fromHeaders,omitempty"`
	FromParams  []string    `json:"fromParams,omitempty"`
	FromCookies []string    `json:"fromCookies,omitempty"`
	// ForwardOriginalToken keeps the token on the forwarded request.
	ForwardOriginalToken  bool               `json:"forwardOriginalToken,omitempty"`
	OutputPayloadToHeader string             `json:"outputPayloadToHeader,omitempty"`
	OutputClaimToHeaders  []JWTClaimToHeader `json:"outputClaimToHeaders,omitempty"`
	// Timeout of the JWKS fetch; 0 is Istio's 5 s.
	Timeout              time.Duration `json:"timeout,omitempty"`
	SpaceDelimitedClaims []string      `json:"spaceDelimitedClaims,omitempty"`
	// RejectTokens: the rule (or its resource's scope) could not be
	// translated exactly, so its provider holds a key set nobody can sign
	// for — every token at its locations is rejected, which denies more,
	// never admits a request Istio would reject (istiod does the same when
	// it cannot fetch a key set).
	RejectTokens bool `json:"rejectTokens,omitempty"`
}

// JWTHeader is a header carrying a token, with the prefix before it.
type JWTHeader struct {
	Name   string `json:"name"`
	Prefix string `json:"prefix,omitempty"`
}

// JWTClaimToHeader copies a verified token's claim into a request header.
type JWTClaimToHeader struct {
	Header string `json:"header"`
	Claim  string `json:"claim"`
}

// DefaultJWKSTimeout is istiod's JWKS fetch timeout.
const DefaultJWKSTimeout = 5 * time.Second
