package envoy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// The JWT back end of RequestAuthentication (docs/design/policy.md §9): the
// JWT rules that apply to one workload become one
// envoy.filters.http.jwt_authn filter for its inbound HTTP ports, built as
// istiod builds a sidecar's (pilot/pkg/security/authn/policy_applier.go,
// convertToEnvoyJwtConfig): providers origins-N in the order of their
// issuers, the payload of a verified token in the filter's dynamic
// metadata under "payload" (what the RBAC filters after it match: §7), and
// a requirement that rejects a request whose token does not verify but
// lets a request without one through.

// FilterJWTAuthn is the JWT filter's name, as istiod's (and the metadata
// namespace its payload is written to).
const FilterJWTAuthn = jwtFilter

// JWTPayloadKey is where jwt_authn writes a verified token's payload in
// its dynamic metadata (istiod's filters.EnvoyJwtFilterPayload).
const JWTPayloadKey = "payload"

// JWTProvider is one JWT rule with the key set its provider checks tokens
// against, inline: the rule's own jwks, or the one the controller fetched
// from its jwksUri (istiod's default: PILOT_JWT_ENABLE_REMOTE_JWKS=false).
type JWTProvider struct {
	Rule ir.JWTRule
	JWKS string
}

// defaultSpaceDelimited are the claims istiod always treats as
// space-delimited lists (buildSpaceDelimitedClaims).
var defaultSpaceDelimited = []string{"permission", "scope"}

// BuildJWTAuthn builds the jwt_authn configuration of one workload's
// JWT rules; nil when there are none. The providers are sorted by issuer
// (stably: rules with the same issuer keep their order), as istiod sorts
// them, and named origins-N by that order.
func BuildJWTAuthn(ps []JWTProvider) (*jwtauthnv3.JwtAuthentication, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	ps = slices.Clone(ps)
	slices.SortStableFunc(ps, func(a, b JWTProvider) int { return cmp.Compare(a.Rule.Issuer, b.Rule.Issuer) })
	providers := make(map[string]*jwtauthnv3.JwtProvider, len(ps))
	// Each provider's requirement is {provider OR allow_missing}, all of
	// them ANDed: a token present at a provider's locations must verify.
	// The outer OR {P1, P2, …, AND} lets a token through that one provider
	// verifies when providers share a location (the AND fails then, since
	// every other provider sees a token it cannot verify).
	inner := make([]*jwtauthnv3.JwtRequirement, 0, len(ps))
	outer := make([]*jwtauthnv3.JwtRequirement, 0, len(ps)+1)
	for i, p := range ps {
		r := p.Rule
		if p.JWKS == "" {
			return nil, fmt.Errorf("%s: no key set", r.Field)
		}
		sd := defaultSpaceDelimited
		if r.SpaceDelimitedClaims != nil {
			sd = slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(r.SpaceDelimitedClaims), defaultSpaceDelimited...))))
		}
		pr := &jwtauthnv3.JwtProvider{
			Issuer:                     r.Issuer,
			Audiences:                  r.Audiences,
			Forward:                    r.ForwardOriginalToken,
			ForwardPayloadHeader:       r.OutputPayloadToHeader,
			PayloadInMetadata:          JWTPayloadKey,
			NormalizePayloadInMetadata: &jwtauthnv3.JwtProvider_NormalizePayload{SpaceDelimitedClaims: sd},
			FromParams:                 r.FromParams,
			FromCookies:                r.FromCookies,
			JwksSourceSpecifier: &jwtauthnv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: p.JWKS}}},
		}
		for _, c := range r.OutputClaimToHeaders {
			pr.ClaimToHeaders = append(pr.ClaimToHeaders, &jwtauthnv3.JwtClaimToHeader{HeaderName: c.Header, ClaimName: c.Claim})
		}
		for _, h := range r.FromHeaders {
			pr.FromHeaders = append(pr.FromHeaders, &jwtauthnv3.JwtHeader{Name: h.Name, ValuePrefix: h.Prefix})
		}
		name := fmt.Sprintf("origins-%d", i)
		providers[name] = pr
		inner = append(inner, anyOf(providerReq(name), &jwtauthnv3.JwtRequirement{
			RequiresType: &jwtauthnv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}))
		outer = append(outer, providerReq(name))
	}
	req := inner[0]
	if len(inner) > 1 {
		outer = append(outer, &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_RequiresAll{
			RequiresAll: &jwtauthnv3.JwtRequirementAndList{Requirements: inner}}})
		req = anyOf(outer...)
	}
	return &jwtauthnv3.JwtAuthentication{
		Rules: []*jwtauthnv3.RequirementRule{{
			Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtauthnv3.RequirementRule_Requires{Requires: req},
		}},
		Providers:           providers,
		BypassCorsPreflight: true,
	}, nil
}

func providerReq(name string) *jwtauthnv3.JwtRequirement {
	return &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_ProviderName{ProviderName: name}}
}

func anyOf(rs ...*jwtauthnv3.JwtRequirement) *jwtauthnv3.JwtRequirement {
	return &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_RequiresAny{
		RequiresAny: &jwtauthnv3.JwtRequirementOrList{Requirements: rs}}}
}

// JWTFilter packs a jwt_authn configuration as an HTTP filter and
// validates it as Envoy would (protoc-gen-validate on the filter and the
// configuration packed in it, durations, regular expressions).
func JWTFilter(cfg *jwtauthnv3.JwtAuthentication) (*hcmv3.HttpFilter, error) {
	a, err := anypb.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", FilterJWTAuthn, err)
	}
	f := &hcmv3.HttpFilter{Name: FilterJWTAuthn, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}
	if err := validateMessage(f); err != nil {
		return nil, fmt.Errorf("invalid %s filter: %w", FilterJWTAuthn, err)
	}
	return f, nil
}

// validateMessage runs Validate's checks on one message outside a set of
// resources.
func validateMessage(m interface{ ProtoReflect() protoreflect.Message }) error {
	c := &checker{validator: &validator{own: &Refs{}, extra: &Refs{}}, plans: map[protoreflect.MessageDescriptor][]protoreflect.FieldDescriptor{}}
	c.deep(Problem{Route: -1}, m.ProtoReflect().Interface())
	if len(c.problems) == 0 {
		return nil
	}
	var msgs []string
	for _, p := range c.problems {
		msgs = append(msgs, p.Message)
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}
