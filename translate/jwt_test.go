package translate

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// jwtBag: pods in two namespaces, a Service, and RequestAuthentications of
// every scope (namespace, selector, targetRef, root namespace), and broken
// ones.
func jwtBag(jwks string) string {
	return `apiVersion: v1
kind: Service
metadata: {name: db, namespace: foo}
spec: {selector: {app: db}, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: foo, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: foo, labels: {app: db}}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: bar, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: web, namespace: foo}
spec:
  selector: {matchLabels: {app: web}}
  jwtRules:
  - issuer: https://b.example
    jwks: '` + jwks + `'
    audiences: [web]
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [tok]
    fromCookies: [session]
    forwardOriginalToken: true
    outputPayloadToHeader: x-payload
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    spaceDelimitedClaims: [roles]
---
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: db, namespace: foo}
spec:
  targetRefs: [{kind: Service, group: "", name: db}]
  jwtRules:
  - {issuer: https://a.example, jwksUri: "https://a.example/keys", timeout: 2s}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh, namespace: istio-system}
spec:
  jwtRules:
  - {issuer: https://mesh.example, jwksUri: "https://mesh.example/keys"}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: broken, namespace: bar}
spec:
  jwtRules:
  - issuer: https://c.example
    jwks: 'not json'
  - issuer: https://d.example
    jwksUri: "ftp://d.example/keys"
    outputClaimToHeaders: [{header: ":path", claim: sub}]
  - {issuer: https://e.example, jwks: '` + jwks + `'}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: both, namespace: bar}
spec:
  selector: {matchLabels: {app: web}}
  targetRefs: [{kind: Service, name: web}]
  jwtRules:
  - {issuer: https://f.example, jwks: '` + jwks + `'}
`
}

// testKeys are keys signing test tokens and the public key set of each.
type testKey struct {
	signer crypto.Signer
	alg    jose.SignatureAlgorithm
	kid    string
}

func newKeys(t testing.TB) []testKey {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return []testKey{{rk, jose.RS256, "rsa-1"}, {ek, jose.ES256, "ec-1"}}
}

// jwksOf is a key set as an identity provider publishes it; private
// includes the private keys (a mistake PublicJWKS must repair).
func jwksOf(t testing.TB, keys []testKey, private bool) string {
	var set jose.JSONWebKeySet
	for _, k := range keys {
		var key any = k.signer.Public()
		if private {
			key = k.signer
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: key, KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sign(t testing.TB, k testKey, claims jwt.Claims, extra map[string]any) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.signer}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Claims(extra).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func loadJWT(t *testing.T, doc string) *input.Bag {
	t.Helper()
	l := input.NewLoader("default")
	l.KeepIgnored = true
	l.LoadBytes("jwt.yaml", []byte(doc))
	if l.Diagnostics().HasErrors() {
		t.Fatal(l.Diagnostics())
	}
	return l.Bag()
}

func podOf(t *testing.T, bag *input.Bag, ns, name string) *input.Pod {
	t.Helper()
	for _, p := range bag.Pods {
		if p.Namespace == ns && p.Name == name {
			return p
		}
	}
	t.Fatalf("no pod %s/%s", ns, name)
	return nil
}

func jwtConfig(t *testing.T, f *hcmv3.HttpFilter) *jwtauthnv3.JwtAuthentication {
	t.Helper()
	if f.GetName() != "envoy.filters.http.jwt_authn" {
		t.Fatalf("filter %q", f.GetName())
	}
	cfg := &jwtauthnv3.JwtAuthentication{}
	if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRequestAuthentications: istiod's validation (ValidateRequestAuthentication)
// as diagnostics at file:line naming the field; an invalid rule rejects
// tokens instead of disappearing, the others are untouched; an unknowable
// scope widens to the namespace and rejects every token.
func TestRequestAuthentications(t *testing.T) {
	keys := newKeys(t)
	bag := loadJWT(t, jwtBag(jwksOf(t, keys, false)))
	ras, diags := RequestAuthentications(bag, AuthzOptions{})
	byName := map[string]ir.RequestAuthn{}
	for _, ra := range ras {
		byName[ra.Source.Name] = ra
	}
	diag := func(name, field string) *ir.Diagnostic {
		for i := range diags {
			if diags[i].Resource.Name == name && diags[i].Field == field {
				return &diags[i]
			}
		}
		return nil
	}
	tests := map[string]struct {
		name, field string // a diagnostic expected there ("" none)
		line        int
		check       func(ra ir.RequestAuthn) error
	}{
		"selector scope, every field": {check: func(ra ir.RequestAuthn) error {
			r := ra.Rules[0]
			if ra.Scope.Namespace != "foo" || ra.Scope.Workloads.MatchLabels["app"] != "web" || r.RejectTokens ||
				!r.ForwardOriginalToken || r.OutputPayloadToHeader != "x-payload" || len(r.FromHeaders) != 1 || r.FromHeaders[0].Prefix != "Bearer " ||
				!slices.Equal(r.FromParams, []string{"tok"}) || !slices.Equal(r.FromCookies, []string{"session"}) || !slices.Equal(r.SpaceDelimitedClaims, []string{"roles"}) {
				return fmt.Errorf("%+v", ra)
			}
			return nil
		}, name: "web"},
		"targetRef scope, timeout, v1beta1": {name: "db", check: func(ra ir.RequestAuthn) error {
			if !slices.Equal(ra.Scope.Services, []string{"db"}) || ra.Rules[0].Timeout != 2*time.Second || ra.Rules[0].JWKSURI != "https://a.example/keys" {
				return fmt.Errorf("%+v", ra)
			}
			return nil
		}},
		"root namespace: every namespace": {name: "mesh", check: func(ra ir.RequestAuthn) error {
			if ra.Scope.Namespace != "" {
				return fmt.Errorf("%+v", ra.Scope)
			}
			return nil
		}},
		"jwks that is not JSON": {name: "broken", field: "spec.jwtRules[0].jwks", line: 59, check: func(ra ir.RequestAuthn) error {
			if !ra.Rules[0].RejectTokens {
				return errors.New("rule 0 accepts tokens")
			}
			return nil
		}},
		"jwksUri scheme": {name: "broken", field: "spec.jwtRules[1].jwksUri", line: 61, check: func(ra ir.RequestAuthn) error {
			if !ra.Rules[1].RejectTokens {
				return errors.New("rule 1 accepts tokens")
			}
			return nil
		}},
		"a pseudo-header for a claim": {name: "broken", field: "spec.jwtRules[1].outputClaimToHeaders[0].header", line: 62},
		"the good rule after bad ones": {name: "broken", check: func(ra ir.RequestAuthn) error {
			if len(ra.Rules) != 3 || ra.Rules[2].RejectTokens || ra.Rules[2].JWKS == "" {
				return fmt.Errorf("%+v", ra.Rules)
			}
			return nil
		}},
		"selector and targetRefs: namespace-wide, rejecting": {name: "both", field: "spec.targetRefs", line: 70, check: func(ra ir.RequestAuthn) error {
			if ra.Scope.Workloads != nil || ra.Scope.Namespace != "bar" || !ra.Rules[0].RejectTokens {
				return fmt.Errorf("%+v", ra)
			}
			return nil
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.field != "" {
				d := diag(tc.name, tc.field)
				if d == nil {
					t.Fatalf("no diagnostic at %s %s: %v", tc.name, tc.field, diags)
				}
				if d.File != "jwt.yaml" || d.Line != tc.line {
					t.Errorf("diagnostic at %s:%d, want jwt.yaml:%d: %s", d.File, d.Line, tc.line, d)
				}
			}
			if tc.check != nil {
				ra, ok := byName[tc.name]
				if !ok {
					t.Fatalf("no %s", tc.name)
				}
				if err := tc.check(ra); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for _, d := range diags {
		if d.Resource.Name == "web" || d.Resource.Name == "db" || d.Resource.Name == "mesh" {
			t.Errorf("diagnostic on a valid resource: %s", d)
		}
	}
}

// TestWorkloadJWT follows istiod's policy_applier_test.go
// (TestJwtFilter, TestConvertToEnvoyJwtConfig): "Single JWT policy"
// (one provider origins-0, {provider OR allow_missing}, payload in
// metadata, 5 s), "Multi JWTs policy" (providers sorted by issuer, the
// outer OR with the AND of each {provider OR allow_missing}), "JWT policy
// with inline Jwks", "Forward original token", "Output payload", "Output
// claim to header", "Single JWT policy with custom space delimited claims",
// "Unreachable Jwks URI" (fail closed with the public-only key set).
func TestWorkloadJWT(t *testing.T) {
	keys := newKeys(t)
	pub := jwksOf(t, keys, false)
	bag := loadJWT(t, jwtBag(pub))
	ras, _ := RequestAuthentications(bag, AuthzOptions{})
	fetched := map[string]string{"https://a.example/keys": pub}
	fetch := func(issuer, uri string, timeout time.Duration) (string, error) {
		if k, ok := fetched[uri]; ok {
			return k, nil
		}
		return "", fmt.Errorf("connection refused")
	}
	type prov struct {
		issuer string
		reject bool
	}
	tests := map[string]struct {
		pod   [2]string
		fetch JWKSFunc
		// providers by name: issuer and whether it rejects every token.
		want map[string]prov
		// multi: the requirement is istiod's OR {P…, AND {P|missing…}}.
		multi bool
		check func(t *testing.T, cfg *jwtauthnv3.JwtAuthentication)
	}{
		"Multi JWTs policy: web's own and the mesh's, sorted by issuer": {pod: [2]string{"foo", "web-1"}, fetch: fetch, multi: true,
			want: map[string]prov{"origins-0": {"https://b.example", false}, "origins-1": {"https://mesh.example", true}},
			check: func(t *testing.T, cfg *jwtauthnv3.JwtAuthentication) {
				p := cfg.Providers["origins-0"]
				want := &jwtauthnv3.JwtProvider{
					Issuer: "https://b.example", Audiences: []string{"web"}, Forward: true, ForwardPayloadHeader: "x-payload",
					PayloadInMetadata: "payload", FromParams: []string{"tok"}, FromCookies: []string{"session"},
					FromHeaders:                []*jwtauthnv3.JwtHeader{{Name: "x-jwt", ValuePrefix: "Bearer "}},
					ClaimToHeaders:             []*jwtauthnv3.JwtClaimToHeader{{HeaderName: "x-sub", ClaimName: "sub"}},
					NormalizePayloadInMetadata: &jwtauthnv3.JwtProvider_NormalizePayload{SpaceDelimitedClaims: []string{"permission", "roles", "scope"}},
					JwksSourceSpecifier:        p.JwksSourceSpecifier,
				}
				if d := cmp.Diff(want, p, protocmp.Transform()); d != "" {
					t.Errorf("provider (-want +got):\n%s", d)
				}
				if !cfg.BypassCorsPreflight || cfg.Rules[0].GetMatch().GetPrefix() != "/" {
					t.Errorf("rule: %v", cfg.Rules)
				}
			}},
		"Single JWT policy: the Service's targetRef, key set fetched": {pod: [2]string{"foo", "db-1"}, fetch: func(issuer, uri string, timeout time.Duration) (string, error) {
			if uri == "https://a.example/keys" && timeout != 2*time.Second {
				return "", fmt.Errorf("timeout %s, want the rule's 2s", timeout)
			}
			return fetch(issuer, uri, timeout)
		},
			want: map[string]prov{"origins-0": {"https://a.example", false}, "origins-1": {"https://mesh.example", true}}, multi: true,
			check: func(t *testing.T, cfg *jwtauthnv3.JwtAuthentication) {
				if sd := cfg.Providers["origins-1"].GetNormalizePayloadInMetadata().GetSpaceDelimitedClaims(); !slices.Equal(sd, []string{"permission", "scope"}) {
					t.Errorf("space-delimited claims %v, want istiod's defaults", sd)
				}
			}},
		"Unreachable Jwks URI: no fetcher rejects tokens": {pod: [2]string{"foo", "db-1"},
			want: map[string]prov{"origins-0": {"https://a.example", true}, "origins-1": {"https://mesh.example", true}}, multi: true},
		"broken rules reject, the good one verifies": {pod: [2]string{"bar", "web-1"}, fetch: fetch, multi: true,
			want: map[string]prov{"origins-0": {"https://c.example", true}, "origins-1": {"https://d.example", true},
				"origins-2": {"https://e.example", false}, "origins-3": {"https://f.example", true}, "origins-4": {"https://mesh.example", true}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f, _, err := WorkloadJWT(ras, bag, podOf(t, bag, tc.pod[0], tc.pod[1]), tc.fetch)
			if err != nil {
				t.Fatal(err)
			}
			cfg := jwtConfig(t, f)
			got := map[string]prov{}
			for n, p := range cfg.Providers {
				got[n] = prov{p.Issuer, p.GetLocalJwks().GetInlineString() == RejectingJWKS}
			}
			if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(prov{})); d != "" {
				t.Errorf("providers (-want +got):\n%s", d)
			}
			req := cfg.Rules[0].GetRequires()
			var wantReq string
			names := slices.Sorted(func(yield func(string) bool) {
				for n := range tc.want {
					if !yield(n) {
						return
					}
				}
			})
			var inner, outer []string
			for _, n := range names {
				inner = append(inner, fmt.Sprintf(`{"requiresAny":{"requirements":[{"providerName":%q},{"allowMissing":{}}]}}`, n))
				outer = append(outer, fmt.Sprintf(`{"providerName":%q}`, n))
			}
			if tc.multi {
				wantReq = `{"requiresAny":{"requirements":[` + strings.Join(outer, ",") + `,{"requiresAll":{"requirements":[` + strings.Join(inner, ",") + `]}}]}}`
			} else {
				wantReq = inner[0]
			}
			w := &jwtauthnv3.JwtRequirement{}
			if err := protojson.Unmarshal([]byte(wantReq), w); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(w, req, protocmp.Transform()); d != "" {
				t.Errorf("requirement (-want +got):\n%s", d)
			}
			if tc.check != nil {
				tc.check(t, cfg)
			}
		})
	}
	t.Run("a pod no RequestAuthentication applies to gets no filter", func(t *testing.T) {
		f, _, err := WorkloadJWT(ras[:0], bag, podOf(t, bag, "foo", "web-1"), fetch)
		if err != nil || f != nil {
			t.Errorf("filter %v, err %v", f, err)
		}
	})
	t.Run("Single JWT policy: one provider, {provider OR allow_missing}", func(t *testing.T) {
		var web []ir.RequestAuthn
		for _, ra := range ras {
			if ra.Source.Name == "web" {
				web = append(web, ra)
			}
		}
		f, _, err := WorkloadJWT(web, bag, podOf(t, bag, "foo", "web-1"), nil)
		if err != nil {
			t.Fatal(err)
		}
		w := &jwtauthnv3.JwtRequirement{}
		_ = protojson.Unmarshal([]byte(`{"requiresAny":{"requirements":[{"providerName":"origins-0"},{"allowMissing":{}}]}}`), w)
		if d := cmp.Diff(w, jwtConfig(t, f).Rules[0].GetRequires(), protocmp.Transform()); d != "" {
			t.Errorf("requirement (-want +got):\n%s", d)
		}
	})
}

// verifyWith verifies a token against a key set the way Envoy's
// jwt_verify_lib does for a local JWKS: the key of the token's kid (any key
// without one), its signature, then the issuer and audiences.
func verifyWith(jwksJSON, token, issuer string, audiences []string) error {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(jwksJSON), &set); err != nil {
		return fmt.Errorf("the emitted key set does not parse as a JWKS: %w", err)
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		return err
	}
	kid := tok.Headers[0].KeyID
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return fmt.Errorf("key %q in the emitted set is not public", k.KeyID)
		}
		if kid != "" && k.KeyID != "" && k.KeyID != kid {
			continue
		}
		var c jwt.Claims
		if err := tok.Claims(k.Key, &c); err != nil {
			continue
		}
		return c.ValidateWithLeeway(jwt.Expected{Issuer: issuer, AnyAudience: audiences, Time: time.Now()}, 60*time.Second)
	}
	return errors.New("no key verifies the token")
}

// TestJWTRealTokens signs tokens with RSA and ECDSA keys and checks them
// against the key sets WorkloadJWT emits (Envoy cannot run here: the check
// is go-jose's, with the key selection of Envoy's jwt_verify_lib): the
// issuer's keys verify its tokens — also when the RequestAuthentication
// carried the private keys, which are not emitted — and neither another
// key's tokens nor any token verifies against the rejecting key set.
func TestJWTRealTokens(t *testing.T) {
	keys, other := newKeys(t), newKeys(t)
	now := time.Now()
	claims := jwt.Claims{Issuer: "https://b.example", Subject: "alice", Audience: jwt.Audience{"web"}, Expiry: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now)}
	for _, private := range []bool{false, true} {
		bag := loadJWT(t, jwtBag(jwksOf(t, keys, private)))
		ras, _ := RequestAuthentications(bag, AuthzOptions{})
		f, _, err := WorkloadJWT(ras, bag, podOf(t, bag, "foo", "web-1"), nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := jwtConfig(t, f)
		emitted := cfg.Providers["origins-0"].GetLocalJwks().GetInlineString()
		if strings.Contains(emitted, `"d"`) {
			t.Errorf("private=%v: the emitted key set holds private key material: %s", private, emitted)
		}
		tests := map[string]struct {
			jwks, token string
			ok          bool
		}{
			"RS256 of the issuer":           {emitted, sign(t, keys[0], claims, nil), true},
			"ES256 of the issuer":           {emitted, sign(t, keys[1], claims, nil), true},
			"another key with the same kid": {emitted, sign(t, other[0], claims, nil), false},
			"wrong audience":                {emitted, sign(t, keys[0], jwt.Claims{Issuer: claims.Issuer, Audience: jwt.Audience{"db"}, Expiry: claims.Expiry}, nil), false},
			"expired":                       {emitted, sign(t, keys[1], jwt.Claims{Issuer: claims.Issuer, Audience: claims.Audience, Expiry: jwt.NewNumericDate(now.Add(-time.Hour))}, nil), false},
			"rejecting key set, RS256":      {RejectingJWKS, sign(t, keys[0], claims, nil), false},
			"rejecting key set, no kid":     {RejectingJWKS, sign(t, testKey{keys[0].signer, jose.RS256, ""}, claims, nil), false},
		}
		for name, tc := range tests {
			t.Run(fmt.Sprintf("private=%v/%s", private, name), func(t *testing.T) {
				err := verifyWith(tc.jwks, tc.token, "https://b.example", cfg.Providers["origins-0"].Audiences)
				if (err == nil) != tc.ok {
					t.Errorf("verified: %v, want %v (%v)", err == nil, tc.ok, err)
				}
			})
		}
	}
}
