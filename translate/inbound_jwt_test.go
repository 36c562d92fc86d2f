package translate

import (
	"os"
	"strings"
	"testing"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// productpageJWT is a RequestAuthentication on bookinfo's productpage with
// an inline key set, and another one whose keys must be fetched.
const (
	productpageJWT = `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: productpage-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  jwtRules:
  - issuer: https://idp.example
    jwks: '{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}'`
	detailsJWTRemote = `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: details-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  jwtRules:
  - issuer: https://remote.example
    jwksUri: https://remote.example/keys`
)

// httpFilterNames are the names of a chain's HTTP filters, in order.
func httpFilterNames(t *testing.T, r *Result, addr string) []string {
	t.Helper()
	l := inboundOf(r)
	if l == nil {
		t.Fatal("no inbound listener")
	}
	var out []string
	for _, f := range chainHCM(t, chainFor(t, l, addr, 9080)).GetHttpFilters() {
		out = append(out, f.GetName())
	}
	return out
}

// TestInboundRequestAuthentication: a RequestAuthentication puts
// jwt_authn on the pod's inbound chains — before the RBAC filters, which
// match the payload it writes — and captures the pod's HTTP ports even
// without an authorization policy (invalid tokens are rejected, 401, as a
// sidecar does). Keys that cannot be fetched give istiod's rejecting key
// set (deny more), said in a diagnostic.
func TestInboundRequestAuthentication(t *testing.T) {
	const productpage, details = "10.244.1.11", "10.244.1.12"
	files := func(extra ...string) []string {
		return append([]string{inboundNS, inboundBookinfo}, extra...)
	}
	for _, f := range files(authzHTTPSample) {
		if !fileExists(f) {
			t.Skipf("fixture %s missing", f)
		}
	}

	t.Run("alone, it captures the pod and validates tokens", func(t *testing.T) {
		r := forNodeWithYAML(t, "node-1", files(), productpageJWT)
		got := strings.Join(httpFilterNames(t, r, productpage), ",")
		if got != "envoy.filters.http.jwt_authn,envoy.filters.http.router" {
			t.Errorf("productpage's HTTP filters = %s; want jwt_authn, router", got)
		}
		jwt := inboundJWTConfig(t, r, productpage)
		p := jwt.GetProviders()
		if len(p) != 1 {
			t.Fatalf("providers = %v", p)
		}
		for _, prov := range p {
			if prov.GetIssuer() != "https://idp.example" || !strings.Contains(prov.GetLocalJwks().GetInlineString(), `"kid":"k1"`) {
				t.Errorf("provider = %v; want the inline keys of https://idp.example", prov)
			}
		}
	})

	t.Run("with authorization, jwt_authn runs before RBAC", func(t *testing.T) {
		r := forNodeWithYAML(t, "node-1", files(authzHTTPSample), productpageJWT)
		names := httpFilterNames(t, r, productpage)
		if len(names) < 3 || names[0] != "envoy.filters.http.jwt_authn" || names[1] != "envoy.filters.http.rbac" || names[len(names)-1] != "envoy.filters.http.router" {
			t.Errorf("productpage's HTTP filters = %v; want jwt_authn, rbac…, router", names)
		}
		// details has no RequestAuthentication: no jwt_authn.
		for _, n := range httpFilterNames(t, r, details) {
			if n == "envoy.filters.http.jwt_authn" {
				t.Errorf("details has jwt_authn: %v", httpFilterNames(t, r, details))
			}
		}
	})

	t.Run("keys that cannot be fetched reject tokens", func(t *testing.T) {
		r := forNodeWithYAML(t, "node-1", files(), detailsJWTRemote)
		for _, prov := range inboundJWTConfig(t, r, details).GetProviders() {
			if prov.GetLocalJwks().GetInlineString() != RejectingJWKS {
				t.Errorf("provider keys = %q; want istiod's rejecting key set", prov.GetLocalJwks().GetInlineString())
			}
		}
		found := false
		for _, d := range r.Diagnostics {
			if d.Code == ir.CodeDeniesMore && strings.Contains(d.Message, "https://remote.example") {
				found = true
			}
		}
		if !found {
			t.Errorf("no deny-more diagnostic naming the issuer: %v", r.Diagnostics)
		}
	})
}

func inboundJWTConfig(t *testing.T, r *Result, addr string) *jwtv3.JwtAuthentication {
	t.Helper()
	for _, f := range chainHCM(t, chainFor(t, inboundOf(r), addr, 9080)).GetHttpFilters() {
		if f.GetName() == "envoy.filters.http.jwt_authn" {
			c := &jwtv3.JwtAuthentication{}
			if err := f.GetTypedConfig().UnmarshalTo(c); err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
	t.Fatal("no jwt_authn filter")
	return nil
}

// forNodeWithYAML translates files plus manifests for a node.
func forNodeWithYAML(t *testing.T, node string, files []string, docs ...string) *Result {
	t.Helper()
	bag, diags, err := Load(files, nil, "default")
	if err != nil {
		t.Fatal(err)
	}
	more, mdiags := LoadBytes("extra.yaml", []byte(strings.Join(docs, "\n---\n")), "default")
	if mdiags.HasErrors() {
		t.Fatal(mdiags)
	}
	for _, o := range more.Objects() {
		bag.Add(o)
	}
	bag.Sort()
	return Translate(bag, append(diags, mdiags...), Options{Node: node})
}

func fileExists(f string) bool {
	_, err := os.Stat(f)
	return err == nil
}
