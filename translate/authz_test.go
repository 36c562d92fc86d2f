package translate

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

const authzBag = `apiVersion: v1
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
kind: AuthorizationPolicy
metadata: {name: ns-deny, namespace: foo}
spec: {action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-allow, namespace: foo}
spec: {selector: {matchLabels: {app: web}}, rules: [{from: [{source: {namespaces: [foo]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-allow, namespace: foo}
spec: {targetRefs: [{kind: Service, group: "", name: db}], rules: [{from: [{source: {principals: [cluster.local/ns/foo/sa/web]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: istio-system}
spec: {action: DENY, rules: [{from: [{source: {ipBlocks: [203.0.113.0/24]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: foo}
spec:
  rules:
  - when: [{key: request.unknown, values: [x]}]
`

// TestWorkloadRBAC: each pod gets the RBAC of exactly the policies that
// apply to it (namespace, selector, targetRefs through the Service's
// selector, mesh-wide), with istiod's policy names; diagnostics about
// policies read from files say where.
func TestWorkloadRBAC(t *testing.T) {
	l := input.NewLoader("default")
	l.KeepIgnored = true
	l.LoadBytes("authz.yaml", []byte(authzBag))
	if l.Diagnostics().HasErrors() {
		t.Fatal(l.Diagnostics())
	}
	bag := l.Bag()
	pols, diags := AuthorizationPolicies(bag, AuthzOptions{})
	var located bool
	for _, d := range diags {
		if d.Severity == ir.SeverityError && d.Resource.Name == "broken" {
			located = d.File == "authz.yaml" && d.Line == 46 && d.Field == "spec.rules[0].when[0].key"
		}
	}
	if !located {
		t.Errorf("the unknown key is not reported at authz.yaml:46: %v", diags)
	}
	pod := func(ns, name string) *input.Pod {
		for _, p := range bag.Pods {
			if p.Namespace == ns && p.Name == name {
				return p
			}
		}
		t.Fatalf("no pod %s/%s", ns, name)
		return nil
	}
	tests := map[string]struct {
		pod  *input.Pod
		want []string // RBAC policy names, sorted
	}{
		"web: its namespace's, its selector's, the mesh's": {pod("foo", "web-1"), []string{
			"ns[foo]-policy[broken]-rule[0]", "ns[foo]-policy[ns-deny]-rule[0]", "ns[foo]-policy[web-allow]-rule[0]", "ns[istio-system]-policy[mesh-deny]-rule[0]"}},
		"db: its Service's targetRef instead of web's selector": {pod("foo", "db-1"), []string{
			"ns[foo]-policy[broken]-rule[0]", "ns[foo]-policy[db-allow]-rule[0]", "ns[foo]-policy[ns-deny]-rule[0]", "ns[istio-system]-policy[mesh-deny]-rule[0]"}},
		"another namespace: the mesh's only": {pod("bar", "web-1"), []string{"ns[istio-system]-policy[mesh-deny]-rule[0]"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			filters, _, err := WorkloadRBAC(pols, bag, tc.pod, false)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for k := range flattenOurs(t, filters) {
				if _, n, ok := strings.Cut(k, " "); ok {
					got = append(got, n)
				}
			}
			slices.Sort(got)
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("policies %v, want %v", got, tc.want)
			}
		})
	}
}

// TestBookinfoSecurityAuthz: Istio's bookinfo authorization samples
// (../shared/conformance/istio-bookinfo/security) translate without
// errors, and each bookinfo workload gets the RBAC of the policies Istio
// applies to it; on a TCP port the GET-only allows are left out, so only
// allow-nothing remains (deny all), as istiod's TCP filter has it.
func TestBookinfoSecurityAuthz(t *testing.T) {
	conf := needShared(t)
	bookinfo := filepath.Join(conf, "istio-bookinfo")
	l := input.NewLoader("default")
	l.KeepIgnored = true
	for _, f := range []string{"platform/kube/bookinfo.yaml", "security/authz-http-bookinfo.yaml", "security/ambient-bookinfo-authz.yaml"} {
		if err := l.LoadPath(filepath.Join(bookinfo, f)); err != nil {
			t.Fatal(err)
		}
	}
	if l.Diagnostics().HasErrors() {
		t.Fatal(l.Diagnostics())
	}
	bag := l.Bag()
	pols, diags := AuthorizationPolicies(bag, AuthzOptions{})
	if diags.HasErrors() {
		t.Fatalf("diagnostics: %v", diags)
	}
	tests := map[string]struct {
		app  string
		tcp  bool
		want []string
	}{
		"productpage: allow-nothing, GET, the gateway's principal, the waypoint's": {app: "productpage", want: []string{
			"rules[ALLOW] ns[default]-policy[allow-nothing]-rule[0]", "rules[ALLOW] ns[default]-policy[productpage-viewer]-rule[0]",
			"rules[ALLOW] ns[default]-policy[productpage-waypoint]-rule[0]", "rules[ALLOW] ns[default]-policy[productpage-ztunnel]-rule[0]"}},
		"details: allow-nothing and GET from productpage": {app: "details", want: []string{
			"rules[ALLOW] ns[default]-policy[allow-nothing]-rule[0]", "rules[ALLOW] ns[default]-policy[details-viewer]-rule[0]"}},
		"ratings on a TCP port: only allow-nothing is left": {app: "ratings", tcp: true, want: []string{
			"rules[ALLOW] ns[default]-policy[allow-nothing]-rule[0]"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pod := &input.Pod{Name: tc.app + "-0", Namespace: "default", Labels: map[string]string{"app": tc.app, "version": "v1"}}
			filters, _, err := WorkloadRBAC(pols, bag, pod, tc.tcp)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for k := range flattenOurs(t, filters) {
				if strings.Contains(k, " ") {
					got = append(got, k)
				}
			}
			slices.Sort(got)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("policies\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
