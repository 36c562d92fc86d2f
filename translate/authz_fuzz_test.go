package translate

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// FuzzAuthorizationPolicy feeds arbitrary manifests through decoding, the
// AuthorizationPolicy translation and both RBAC builders: whatever the
// input, nothing panics and whatever the translator produces has a valid
// RBAC form (an error here would mean a port left unserved). Seeds are
// istiod's builder inputs when ../shared is present, and hand-written
// edge cases.
//
//	go test -run '^$' -fuzz FuzzAuthorizationPolicy -fuzztime 60s -fuzzminimizetime 200x ./translate/
func FuzzAuthorizationPolicy(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join(shared, "conformance/istio-authz/*/*-in.yaml"))
	ambient, _ := filepath.Glob(filepath.Join(shared, "conformance/istio-ambient-authz/*-in.yaml"))
	for _, s := range append(seeds, ambient...) {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	head := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\n"
	for _, s := range []string{
		"spec: {}\n",
		"spec: {rules: [null, {}, {from: [null, {source: null}], to: [{operation: null}], when: [null]}]}\n",
		"spec: {action: CUSTOM, rules: [{when: [{key: \"request.headers[]\", values: [\"*\"]}]}]}\n",
		"spec: {rules: [{when: [{key: \"request.auth.claims[a][\", values: [x]}, {key: \"experimental.envoy.filters.x[\", values: [y]}]}]}\n",
		"spec: {rules: [{to: [{operation: {paths: [\"/{**}/{**}\", \"{*}\", \"/a/{*}\"], ports: [\"65536\", \"-1\", \"x\"]}}]}]}\n",
		"spec: {targetRefs: [{kind: Service, namespace: other, name: x}, {kind: Gateway, name: g}]}\n",
		"spec: {rules: [{from: [{source: {principals: [\"*\", \"**\", \"a*b\", \"/\", \"////\"], ipBlocks: [\"::1\", \"1.2.3.4/33\"], remoteIpBlocks: [\"0.0.0.0/0\"]}}]}]}\n",
	} {
		f.Add([]byte(head + s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l := input.NewLoader("default")
		l.KeepIgnored = true
		l.LoadBytes("fuzz.yaml", data)
		pols, _ := AuthorizationPolicies(l.Bag(), AuthzOptions{TrustDomainAliases: []string{"old.td", "*x"}})
		for _, tcp := range []bool{false, true} {
			filters, _, err := BuildRBAC(pols, tcp)
			if err != nil {
				t.Fatalf("RBAC (tcp %v): %v", tcp, err)
			}
			for _, f := range filters {
				if tcp {
					_, err = f.NetworkFilter()
				} else {
					_, err = f.HTTPFilter()
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// syntheticAuthz is n AuthorizationPolicies with rules rules each, every
// rule with sources, operations and conditions of every common kind, over
// 50 namespaces.
func syntheticAuthz(n, rules int) []*securityv1.AuthorizationPolicy {
	out := make([]*securityv1.AuthorizationPolicy, 0, n)
	for i := range n {
		ns := fmt.Sprintf("ns-%d", i%50)
		ap := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%d", i), Namespace: ns}}
		ap.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i%20)}}
		if i%4 == 0 {
			ap.Spec.Action = securityapi.AuthorizationPolicy_DENY
		}
		for r := range rules {
			ap.Spec.Rules = append(ap.Spec.Rules, &securityapi.Rule{
				From: []*securityapi.Rule_From{
					{Source: &securityapi.Source{Principals: []string{fmt.Sprintf("cluster.local/ns/%s/sa/client-%d", ns, r), "*/sa/admin"}}},
					{Source: &securityapi.Source{Namespaces: []string{"ns-1", "team-*"}, IpBlocks: []string{"10.0.0.0/8"}}},
				},
				To: []*securityapi.Rule_To{
					{Operation: &securityapi.Operation{Methods: []string{"GET", "HEAD"}, Paths: []string{fmt.Sprintf("/api/v%d/*", r), "/healthz"}, Ports: []string{"8080"}}},
					{Operation: &securityapi.Operation{Hosts: []string{"*.example.com"}, NotPaths: []string{"/admin/*"}}},
				},
				When: []*securityapi.Condition{{Key: "request.headers[x-tenant]", Values: []string{fmt.Sprintf("t-%d", r)}}},
			})
		}
		out = append(out, ap)
	}
	return out
}

// BenchmarkAuthorizationPolicies: 1,000 AuthorizationPolicies with 10 rules
// each, all applying to one node's workloads (the worst case: every policy
// rendered once), translated into the model and built into the HTTP and
// the network RBAC filters, together and phase by phase. Target: ≤ 100 ms
// per op (issue 14); docs/benchmarks.md has the figures.
func BenchmarkAuthorizationPolicies(b *testing.B) {
	aps := syntheticAuthz(1000, 10)
	b.Run("translate+http+tcp", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			pols, _ := istio.AuthorizationPolicies(aps, AuthzOptions{})
			if _, _, err := BuildRBAC(pols, false); err != nil {
				b.Fatal(err)
			}
			if _, _, err := BuildRBAC(pols, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("translate+http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			pols, _ := istio.AuthorizationPolicies(aps, AuthzOptions{})
			if _, _, err := BuildRBAC(pols, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	pols, _ := istio.AuthorizationPolicies(aps, AuthzOptions{})
	b.Run("translate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			istio.AuthorizationPolicies(aps, AuthzOptions{})
		}
	})
	for _, tcp := range []bool{false, true} {
		b.Run(fmt.Sprintf("rbac/tcp=%v", tcp), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := BuildRBAC(pols, tcp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
