package migration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAnalyzePeerAuthentications: analyze no longer blocks a namespace for
// its PeerAuthentications. Each is reported under the namespaces whose
// workloads it decides, with the effective mode of their ports (istiod's
// precedence); STRICT is a change (enforced in eBPF by attested identity,
// no mTLS on the wire), PERMISSIVE and DISABLE are supported, and what
// istiod ignores is said.
func TestAnalyzePeerAuthentications(t *testing.T) {
	const workload = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: app}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web}]}
---
`
	pa := func(ns, name, ts, spec string) string {
		return "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " + name + ", namespace: " + ns +
			", creationTimestamp: '2026-01-01T00:00:" + ts + "Z'}\nspec: " + spec + "\n---\n"
	}
	tests := map[string]struct {
		policies string
		// level is the level of the policies' findings (the highest).
		level Level
		// findings are "code ns/name field: message substring" that must
		// be filed under namespace app.
		findings []string
		// absent are codes that must not be.
		absent []string
	}{
		"namespace STRICT: enforced in eBPF, a change": {
			policies: pa("app", "default", "01", `{mtls: {mode: STRICT}}`),
			level:    Changed,
			findings: []string{"PeerAuthenticationStrict app/default spec.mtls: decides web: STRICT. STRICT is enforced by nodemesh in eBPF"},
			absent:   []string{"PeerAuthentication"},
		},
		"mesh STRICT in the root namespace": {
			policies: pa("istio-system", "default", "01", `{mtls: {mode: STRICT}}`),
			level:    Changed,
			findings: []string{"PeerAuthenticationStrict istio-system/default spec.mtls: decides web: STRICT"},
		},
		"PERMISSIVE is supported": {
			policies: pa("app", "default", "01", `{mtls: {mode: PERMISSIVE}}`),
			level:    Supported,
			findings: []string{"PeerAuthentication app/default spec.mtls: decides web: PERMISSIVE: no STRICT port"},
			absent:   []string{"PeerAuthenticationStrict"},
		},
		"DISABLE is supported": {
			policies: pa("app", "default", "01", `{mtls: {mode: DISABLE}}`),
			level:    Supported,
			findings: []string{"PeerAuthentication app/default spec.mtls: decides web: DISABLE"},
			absent:   []string{"PeerAuthenticationStrict"},
		},
		"a port-level STRICT on a PERMISSIVE workload": {
			policies: pa("app", "web", "01", `{selector: {matchLabels: {app: web}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {"8080": {mode: STRICT}}}`),
			level:    Changed,
			findings: []string{"PeerAuthenticationStrict app/web spec.mtls: decides web: PERMISSIVE, port 8080 STRICT"},
		},
		"a workload DISABLE over a STRICT namespace: the namespace's decides nothing for web": {
			policies: pa("app", "default", "01", `{mtls: {mode: STRICT}}`) + pa("app", "web", "02", `{selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}}`),
			level:    Supported,
			findings: []string{"PeerAuthentication app/web spec.mtls: decides web: DISABLE"},
			absent:   []string{"PeerAuthenticationStrict"},
		},
		"UNSET inherits the mesh's STRICT": {
			policies: pa("istio-system", "mesh", "01", `{mtls: {mode: STRICT}}`) + pa("app", "default", "02", `{mtls: {mode: UNSET}}`),
			level:    Changed,
			findings: []string{"PeerAuthenticationStrict istio-system/mesh spec.mtls: decides web: STRICT"},
		},
		"a caller outside the mesh is named: nodemesh will admit its plaintext": {
			policies: pa("app", "default", "01", `{mtls: {mode: STRICT}}`) + `apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec: {selector: {app: web}, ports: [{port: 8080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: curl, namespace: legacy}
spec:
  selector: {matchLabels: {app: curl}}
  template:
    metadata: {labels: {app: curl}}
    spec: {containers: [{name: c, image: curl, args: ["http://web.app.svc.cluster.local:8080/"]}]}
---
`,
			level:    Changed,
			findings: []string{"StrictCallerOutsideMesh app/default spec.mtls: legacy, outside the mesh, calls app: Istio refuses its plaintext"},
		},
		"a younger namespace-level policy is ignored, as istiod does": {
			policies: pa("app", "old", "01", `{mtls: {mode: PERMISSIVE}}`) + pa("app", "young", "09", `{mtls: {mode: STRICT}}`),
			level:    Supported,
			findings: []string{"PeerAuthenticationIgnored app/young spec: ignored: the namespace-level PeerAuthentication old is older",
				"PeerAuthentication app/old spec.mtls: decides web: PERMISSIVE"},
			absent: []string{"PeerAuthenticationStrict"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "in.yaml")
			if err := os.WriteFile(file, []byte(workload+tc.policies), 0o644); err != nil {
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
			var all []string
			codes := map[string]bool{}
			level := Supported
			for _, f := range ns.Findings {
				if !strings.HasPrefix(f.Code, "PeerAuthentication") && !strings.HasPrefix(f.Code, "Strict") {
					continue
				}
				codes[f.Code] = true
				if rank := map[Level]int{Supported: 0, Changed: 1, Unsupported: 2}; rank[f.Level] > rank[level] {
					level = f.Level
				}
				all = append(all, f.Code+" "+f.Resource.Namespace+"/"+f.Resource.Name+" "+f.Field+": "+f.Message)
			}
			got := strings.Join(all, "\n")
			if ns.Verdict == Blocked {
				t.Errorf("namespace blocked:\n%+v", ns.Findings)
			}
			if level != tc.level {
				t.Errorf("level %s, want %s\n%s", level, tc.level, got)
			}
			for _, want := range tc.findings {
				if !strings.Contains(got, want) {
					t.Errorf("no finding %q in\n%s", want, got)
				}
			}
			for _, code := range tc.absent {
				if codes[code] {
					t.Errorf("a %s finding, want none:\n%s", code, got)
				}
			}
		})
	}
}
