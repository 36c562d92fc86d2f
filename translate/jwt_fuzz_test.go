package translate

import (
	"testing"
	"time"

	"github.com/nodemesh/nodemesh/translate/input"
)

// FuzzRequestAuthentication feeds arbitrary manifests through decoding,
// the RequestAuthentication translation and the jwt_authn builder for
// every pod: whatever the input, nothing panics and every filter built
// passes validation (an error would leave the pod's HTTP ports unserved).
//
//	go test -run '^$' -fuzz FuzzRequestAuthentication -fuzztime 60s ./translate/
func FuzzRequestAuthentication(f *testing.F) {
	f.Add([]byte(jwtBag(`{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}`)))
	head := "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: r, namespace: foo}\n"
	pod := "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: foo, labels: {app: a}}\nspec: {containers: [{name: c, image: i}]}\n"
	for _, s := range []string{
		"spec: {}\n",
		"spec: {jwtRules: [null, {}, {issuer: x, fromHeaders: [null, {name: \"\"}], outputClaimToHeaders: [null]}]}\n",
		"spec: {jwtRules: [{issuer: x, jwks: '{\"keys\":[{}]}', timeout: -1s}]}\n",
		"spec: {jwtRules: [{jwksUri: \"http://[::1\"}, {issuer: y, jwks: '{\"kty\":\"oct\",\"k\":\"AAAA\"}'}]}\n",
		"spec: {selector: {matchLabels: {app: a}}, targetRef: {kind: Service, name: s}, jwtRules: [{issuer: z, audiences: [\"\"]}]}\n",
		"spec: {jwtRules: [{issuer: \"a\\nb\", fromHeaders: [{name: x, prefix: \"\\u0000\"}], fromParams: [\"\"], spaceDelimitedClaims: [\"\"]}]}\n",
	} {
		f.Add([]byte(head + s + pod))
	}
	fetch := func(issuer, uri string, _ time.Duration) (string, error) { return uri, nil } // garbage keys
	f.Fuzz(func(t *testing.T, data []byte) {
		l := input.NewLoader("default")
		l.KeepIgnored = true
		l.LoadBytes("fuzz.yaml", data)
		bag := l.Bag()
		ras, _ := RequestAuthentications(bag, AuthzOptions{})
		for _, p := range bag.Pods {
			for _, fn := range []JWKSFunc{nil, fetch} {
				if _, _, err := WorkloadJWT(ras, bag, p, fn); err != nil {
					t.Fatalf("pod %s/%s: %v", p.Namespace, p.Name, err)
				}
			}
		}
	})
}
