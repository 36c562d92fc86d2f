package istio

import (
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// TestJWTClaimMatchRejected: a VirtualService header match on
// @request.auth.claims.* is Istio's match on a validated JWT's claims.
// Until nodemesh validates JWTs it is an error and its rule is left out —
// never a literal header match, which any client could satisfy by sending
// a header of that name. The other rules of the VirtualService stay.
func TestJWTClaimMatchRejected(t *testing.T) {
	for name, field := range map[string]string{"headers": "headers", "withoutHeaders": "withoutHeaders"} {
		t.Run(name, func(t *testing.T) {
			l := input.NewLoader("default")
			l.LoadBytes("vs.yaml", []byte(`
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  clusterIP: 10.96.0.11
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api]
  http:
  - match: [{`+field+`: {"@request.auth.claims.group": {exact: admins}}}]
    route: [{destination: {host: api}, headers: {request: {set: {x-admin: "yes"}}}}]
  - route: [{destination: {host: api}}]
`))
			if d := l.Diagnostics(); d.HasErrors() {
				t.Fatalf("load: %v", d)
			}
			p := Prepare(l.Bag(), Options{})
			var found bool
			for _, d := range p.Diagnostics() {
				if d.Severity == ir.SeverityError && strings.Contains(d.Message, "@request.auth.claims.group matches a JWT claim") &&
					strings.Contains(d.Field, "http[0].match[0]."+field) {
					found = true
				}
			}
			if !found {
				t.Errorf("no error naming the claim match's field; diagnostics:\n%v", p.Diagnostics())
			}
			routes := 0
			for _, rc := range p.Base.RouteConfigs {
				for _, vh := range rc.VirtualHosts {
					for _, r := range vh.Routes {
						for _, h := range r.Match.Headers {
							if strings.HasPrefix(h.Name, "@request.auth") {
								t.Errorf("route config %s: a literal header match on %s", rc.Name, h.Name)
							}
						}
						if strings.HasPrefix(vh.Name, "api.default") {
							routes++
						}
					}
				}
			}
			if routes == 0 {
				t.Error("the VirtualService's other rule was left out too")
			}
		})
	}
}
