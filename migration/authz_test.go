package migration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAnalyzeAuthorizationPolicies: analyze stops blocking namespaces for
// AuthorizationPolicies nodemesh enforces the same way (L4 facts, in eBPF)
// and blocks exactly the rules it cannot (request facts, CUSTOM), naming
// the rule; AUDIT is a change, not a block.
func TestAnalyzeAuthorizationPolicies(t *testing.T) {
	const pod = `apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: NS, labels: {app: web}}
spec: {containers: [{name: web, image: web}]}
---
`
	tests := map[string]struct {
		policy  string
		verdict Verdict
		code    string
		field   string
	}{
		"L4 ALLOW by principal and port": {
			policy: `spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/other/sa/client"]}}], to: [{operation: {ports: ["8080"]}}]}]`,
			verdict: Ready, code: "AuthorizationPolicy", field: "spec.rules[0]",
		},
		"L4 DENY by namespace": {
			policy:  `spec: {action: DENY, rules: [{from: [{source: {namespaces: ["legacy"]}}]}]}`,
			verdict: Ready, code: "AuthorizationPolicy", field: "spec.rules[0]",
		},
		"allow-nothing": {policy: `spec: {}`, verdict: Ready, code: "AuthorizationPolicy", field: "spec"},
		// Request facts: the node Envoy's inbound RBAC on HTTP ports
		// (captured by the agent), Istio's TCP semantics elsewhere.
		"ALLOW with a method": {
			policy:  `spec: {rules: [{to: [{operation: {methods: ["GET"]}}]}]}`,
			verdict: Ready, code: "L7AuthorizationPolicy", field: "spec.rules[0]",
		},
		"DENY with a path": {
			policy:  `spec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin"]}}]}]}`,
			verdict: Ready, code: "L7AuthorizationPolicy", field: "spec.rules[0]",
		},
		"CUSTOM": {
			policy:  `spec: {action: CUSTOM, provider: {name: opa}, rules: [{}]}`,
			verdict: Blocked, code: "CustomAuthorization", field: "spec.provider",
		},
		"AUDIT": {
			policy:  `spec: {action: AUDIT, rules: [{}]}`,
			verdict: ReadyWithChanges, code: "AuditAuthorization", field: "spec.action",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "in.yaml")
			doc := strings.ReplaceAll(pod, "NS", "app") + "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: app}\n" + tc.policy + "\n"
			if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			inv, err := LoadFiles([]string{file}, nil, "default")
			if err != nil {
				t.Fatal(err)
			}
			r := Analyze(inv, Options{Namespaces: []string{"app"}})
			ns := r.Namespace("app")
			if ns == nil {
				t.Fatal("no report for namespace app")
			}
			var found bool
			var all []string
			for _, f := range ns.Findings {
				all = append(all, string(f.Level)+" "+f.Code+" "+f.Field+": "+f.Message)
				if f.Resource.Kind == "AuthorizationPolicy" && f.Code == tc.code && f.Field == tc.field {
					found = true
				}
			}
			if ns.Verdict != tc.verdict || !found {
				t.Errorf("verdict %s, want %s; a %s finding at %s: %v\n%s", ns.Verdict, tc.verdict, tc.code, tc.field, found, strings.Join(all, "\n"))
			}
		})
	}
}
