package input

import (
	"fmt"
	"strings"
	"testing"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
)

// TestKeptKindsDecodeStrictly: the kinds tools read besides the translator's
// (Loader.KeepIgnored) are decoded with the translator's strictness and
// diagnostics — field path and line — and left untyped when they do not
// decode; without KeepIgnored they are only reported as ignored.
func TestKeptKindsDecodeStrictly(t *testing.T) {
	tests := map[string]struct {
		in string
		// want lists "line code field message" of the diagnostics after the
		// IgnoredKind one.
		want []string
		// typed says whether the object decoded.
		typed bool
	}{
		"a Deployment": {
			in: `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: web:1}]
`,
			typed: true,
		},
		"a Deployment with a mistyped field": {
			in: `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    spec:
      containers: [{name: web, image: web:1, imagePullPolicy: Always, ports: [{containerPort: "80"}]}]
`,
			want: []string{`8 InvalidValue spec.template.spec.containers.ports.containerPort expected int32, got string`},
		},
		"an AuthorizationPolicy with an unknown field": {
			in: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: shop}
spec:
  action: DENY
  rules:
  - from:
    - source: {principal: [cluster.local/ns/a/sa/b]}
`,
			want: []string{`8 UnknownField spec.rules[0].from[0].source.principal unknown field "principal" (did you mean "principals"?)`},
		},
		"an AuthorizationPolicy with an action Istio does not have": {
			in: `apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: shop}
spec: {action: REJECT}
`,
			want: []string{`4 InvalidValue spec.action`},
		},
		"an AuthorizationPolicy without a spec allows nothing, as in Istio": {
			in: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: shop}
`,
			typed: true,
		},
		"a version the kind does not have": {
			in: `apiVersion: apps/v1beta2
kind: Deployment
metadata: {name: web, namespace: shop}
spec: {}
`,
			want: []string{`1 Decode apiVersion unsupported apiVersion "apps/v1beta2" for Deployment; use apps/v1`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			l := NewLoader("")
			l.KeepIgnored = true
			l.LoadBytes("in.yaml", []byte(tc.in))
			diags := l.Diagnostics()
			if len(diags) == 0 || diags[0].Code != "IgnoredKind" {
				t.Fatalf("diagnostics %v: want IgnoredKind first (the translator still ignores the kind)", diags)
			}
			var got []string
			for _, d := range diags[1:] {
				if d.File != "in.yaml" {
					t.Errorf("%v: not located in its file", d)
				}
				got = append(got, fmt.Sprintf("%d %s %s %s", d.Line, d.Code, d.Field, d.Message))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("diagnostics:\n got: %q\nwant: %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("diagnostic %d:\n got: %q\nwant: %q…", i, got[i], tc.want[i])
				}
			}
			others := l.Bag().Other
			if len(others) != 1 {
				t.Fatalf("Other = %v, want the object", others)
			}
			if typed := others[0].Typed != nil; typed != tc.typed {
				t.Errorf("typed = %v (%T), want %v", typed, others[0].Typed, tc.typed)
			}

			// Without KeepIgnored: ignored, nothing else said.
			plain := NewLoader("")
			plain.LoadBytes("in.yaml", []byte(tc.in))
			if d := plain.Diagnostics(); len(d) != 1 || d[0].Code != "IgnoredKind" {
				t.Errorf("without KeepIgnored: %v", d)
			}
		})
	}

	// Decoded objects carry their namespace and the Go type tools read.
	l := NewLoader("team")
	l.KeepIgnored = true
	l.LoadBytes("in.yaml", []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {selector: {matchLabels: {app: web}}}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {action: DENY}\n"))
	var kinds []string
	for _, o := range l.Bag().Other {
		switch v := o.Typed.(type) {
		case *appsv1.Deployment:
			kinds = append(kinds, "Deployment "+v.Namespace+"/"+v.Name+" "+v.Spec.Selector.MatchLabels["app"])
		case *securityv1.AuthorizationPolicy:
			kinds = append(kinds, "AuthorizationPolicy "+v.Namespace+"/"+v.Name+" "+v.Spec.GetAction().String())
		}
	}
	if got := strings.Join(kinds, ", "); got != "AuthorizationPolicy team/p DENY, Deployment team/web web" {
		t.Errorf("typed objects: %s", got)
	}
}

// TestKindsTable: every kind is listed once, with a version it accepts, and
// the translated ones are what a Bag holds.
func TestKindsTable(t *testing.T) {
	seen := map[string]bool{}
	var translated []string
	for _, k := range Kinds() {
		if seen[k.Kind] {
			t.Errorf("%s listed twice", k.Kind)
		}
		seen[k.Kind] = true
		if k.Version == "" || k.Resource == "" {
			t.Errorf("%s: version %q, resource %q", k.Kind, k.Version, k.Resource)
		}
		if k.Translated {
			translated = append(translated, k.Kind)
		}
	}
	if got := strings.Join(translated, " "); got != "Namespace Service Pod EndpointSlice VirtualService DestinationRule ServiceEntry Gateway" {
		t.Errorf("translated kinds: %s", got)
	}
}
