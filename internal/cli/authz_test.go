package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const authzManifests = `apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Pod
metadata: {name: sidecar-1, namespace: default, labels: {app: ratings}}
spec: {nodeName: node-1, containers: [{name: r, image: ratings}, {name: istio-proxy, image: proxyv2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: outside-1, namespace: other, labels: {app: ratings}}
spec: {nodeName: node-1, containers: [{name: r, image: ratings}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-1, namespace: default, labels: {app: ratings}}
spec: {nodeName: node-1, serviceAccountName: bookinfo-ratings, containers: [{name: r, image: ratings, ports: [{name: http, containerPort: 9080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: details-1, namespace: default, labels: {app: details}}
spec: {nodeName: node-2, containers: [{name: d, image: details}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-reviews"]}}]
    to: [{operation: {methods: ["GET"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-legacy, namespace: istio-system}
spec:
  action: DENY
  rules:
  - from: [{source: {namespaces: ["legacy"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: details-only, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  rules:
  - from: [{source: {namespaces: ["default"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: other}
spec: {action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ratings, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  portLevelMtls: {"15000": {mode: DISABLE}}
`

// TestAuthzCheck: for one pod, the policies that apply (its namespace's,
// the root namespace's; not another pod's, not another namespace's), in
// Istio's order (DENY before ALLOW), each rule with where it is enforced:
// L4 rules in eBPF on the pod's node, a rule with a request fact as its L4
// projection, saying that the ALLOW then never matches.
func TestAuthzCheck(t *testing.T) {
	file := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(file, []byte(authzManifests), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "", "authz", "check", "ratings-1", "-n", "default", "-f", file, "-o", "json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var c AuthzCheck
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var names []string
	for _, p := range c.Policies {
		names = append(names, p.Namespace+"/"+p.Name+":"+p.Action)
	}
	if got, want := strings.Join(names, " "), "istio-system/deny-legacy:Deny default/allow-nothing:Allow default/ratings-viewer:Allow"; got != want {
		t.Errorf("policies %q, want %q", got, want)
	}
	if !c.Isolated || c.Node != "node-1" || c.EnforcedBy != "nodemesh" {
		t.Errorf("isolated %v node %q enforced by %q, want true node-1 nodemesh", c.Isolated, c.Node, c.EnforcedBy)
	}
	if len(c.Policies) == 3 {
		deny := c.Policies[0].Rules
		if len(deny) != 1 || deny[0].Layer != "L4" || deny[0].EnforcedAt != "eBPF at the pod's veth on node node-1" || len(deny[0].DeniesMore) != 0 {
			t.Errorf("deny-legacy's rule: %+v", deny)
		}
		viewer := c.Policies[2].Rules
		if len(viewer) != 1 || viewer[0].Layer != "L7" || !strings.Contains(viewer[0].EnforcedAt, "L4 projection") ||
			len(viewer[0].DeniesMore) == 0 || !strings.Contains(viewer[0].DeniesMore[0], "never matches") {
			t.Errorf("ratings-viewer's rule: %+v", viewer)
		}
		if len(c.Policies[1].Rules) != 0 {
			t.Errorf("allow-nothing has rules: %+v", c.Policies[1].Rules)
		}
	}

	// Peer authentication: the mesh's STRICT, inherited by the workload
	// policy (no mtls), which sets port 15000 apart; the named port 9080.
	pa := c.PeerAuthentication
	if got := fmt.Sprintf("%+v", pa.Default); got != "{Port:0 Name: Mode:STRICT Level:mesh Policy:istio-system/default}" {
		t.Errorf("peer authentication default %s", got)
	}
	if got := fmt.Sprintf("%+v", pa.Ports); got != "[{Port:9080 Name:http Mode:STRICT Level:mesh Policy:istio-system/default} "+
		"{Port:15000 Name: Mode:DISABLE Level:port Policy:default/ratings}]" {
		t.Errorf("peer authentication ports %s", got)
	}
	if !strings.HasPrefix(pa.EnforcedAt, "eBPF at the pod's veth") {
		t.Errorf("peer authentication enforced at %q", pa.EnforcedAt)
	}

	code, out, _ = run(t, "", "authz", "check", "ratings-1", "-n", "default", "-f", file)
	for _, want := range []string{"Pod default/ratings-1 on node-1, authorized by nodemesh",
		"Peer authentication: STRICT (mesh: istio-system/default) by default; per port:", "15000   -      DISABLE (port: default/ratings)", "An ALLOW policy applies", "default/allow-nothing", "no rules: allows nothing by itself",
		"⚠️  default/ratings-viewer spec.rules[0]"} {
		if code != ExitOK || !strings.Contains(out, want) {
			t.Errorf("table output lacks %q (exit %d):\n%s", want, code, out)
		}
	}

	// A pod with a sidecar is its sidecar's to authorize, a pod outside
	// the mesh nobody's: check says so for every rule.
	for pod, want := range map[string]string{"default/sidecar-1": "sidecar", "other/outside-1": "none"} {
		ns, name, _ := strings.Cut(pod, "/")
		code, out, errOut := run(t, "", "authz", "check", name, "-n", ns, "-f", file, "-o", "json")
		var c AuthzCheck
		if err := json.Unmarshal([]byte(out), &c); code != ExitOK || err != nil {
			t.Fatalf("%s: exit %d %v %s", pod, code, err, errOut)
		}
		if c.EnforcedBy != want {
			t.Errorf("%s enforced by %q, want %q", pod, c.EnforcedBy, want)
		}
		for _, p := range c.Policies {
			for _, r := range p.Rules {
				if strings.Contains(r.EnforcedAt, "eBPF") {
					t.Errorf("%s: rule %s %s claimed by eBPF: %s", pod, p.Name, r.Field, r.EnforcedAt)
				}
			}
		}
	}

	code, _, errOut = run(t, "", "authz", "check", "nope", "-n", "default", "-f", file)
	if code != ExitFindings || !strings.Contains(errOut, "pod default/nope not found") {
		t.Errorf("missing pod: exit %d %s", code, errOut)
	}
}

// TestAuthzCheckCaptured: with a Service declaring the pod's port HTTP, the
// pod's rules with request facts are the node Envoy's on that port (the
// agent captures it), and check says so.
func TestAuthzCheckCaptured(t *testing.T) {
	file := filepath.Join(t.TempDir(), "m.yaml")
	svc := `
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
`
	if err := os.WriteFile(file, []byte(authzManifests+svc), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "", "authz", "check", "ratings-1", "-n", "default", "-f", file, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var c AuthzCheck
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(c.CapturedPorts) != 1 || c.CapturedPorts[0] != 9080 {
		t.Errorf("captured ports %v, want [9080]", c.CapturedPorts)
	}
	for _, p := range c.Policies {
		if p.Name != "ratings-viewer" {
			continue
		}
		if len(p.Rules) != 1 || !strings.Contains(p.Rules[0].EnforcedAt, "the node Envoy's inbound RBAC on node node-1 for port(s) 9080") {
			t.Errorf("ratings-viewer's rule: %+v", p.Rules)
		}
	}
	_, table, _ := run(t, "", "authz", "check", "ratings-1", "-n", "default", "-f", file)
	if !strings.Contains(table, "Captured into the node Envoy's inbound listener (HTTP rules by its RBAC, JWTs by its jwt_authn): port(s) 9080") {
		t.Errorf("table output lacks the captured ports:\n%s", table)
	}
}

// TestAuthzCheckCapturedByRequestAuthentication: a RequestAuthentication
// alone captures a pod's HTTP port (its JWT validation runs in the node
// Envoy), as the controller and the agent decide; check counts it.
func TestAuthzCheckCapturedByRequestAuthentication(t *testing.T) {
	svc := `
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec: {selector: {app: details}, ports: [{name: http, port: 9080}]}
`
	ra := `
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  jwtRules: [{issuer: "https://idp.example", jwks: '{"keys":[]}'}]
`
	for name, c := range map[string]struct {
		extra string
		want  []uint32
	}{
		"L4 policy only: not captured":           {svc, nil},
		"with a RequestAuthentication: captured": {svc + ra, []uint32{9080}},
	} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "m.yaml")
			if err := os.WriteFile(file, []byte(authzManifests+c.extra), 0o644); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := run(t, "", "authz", "check", "details-1", "-n", "default", "-f", file, "-o", "json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var got AuthzCheck
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !slices.Equal(got.CapturedPorts, c.want) {
				t.Errorf("captured ports %v, want %v", got.CapturedPorts, c.want)
			}
		})
	}
}
