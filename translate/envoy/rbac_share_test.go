package envoy

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// peerBase and requestBase are matches with every field of their side set
// (a match holds one side only: matchSide).
func peerBase() ir.PolicyMatch {
	return ir.PolicyMatch{
		Principals:      []ir.Glob{"cluster.local/ns/a/sa/x", "*/sa/admin"},
		NotPrincipals:   []ir.Glob{"cluster.local/ns/a/sa/evil"},
		Namespaces:      []ir.Glob{"a", "team-*"},
		NotNamespaces:   []ir.Glob{"kube-system"},
		IPBlocks:        []ir.IPBlock{{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}},
		NotIPBlocks:     []ir.IPBlock{{CIDR: netip.MustParsePrefix("192.168.0.0/16")}},
		TrustDomains:    []ir.Glob{"cluster.local"},
		NotTrustDomains: []ir.Glob{"evil.*"},
		L7: []ir.L7Condition{
			{Attribute: ir.L7RequestPrincipal, Values: []ir.Glob{"https://idp/users/alice"}, NotValues: []ir.Glob{"*/bob"}},
			{Attribute: ir.L7RemoteIP, Values: []ir.Glob{"172.16.0.0/12"}},
			{Attribute: ir.L7Header, Name: "x-tenant", Values: []ir.Glob{"t-1"}, NotValues: []ir.Glob{"t-2*"}},
			{Attribute: ir.L7Claim, Path: []string{"groups", "a"}, Values: []ir.Glob{"admins"}},
			{Attribute: ir.L7Audience, Values: []ir.Glob{"api"}},
			{Attribute: ir.L7Presenter, Values: []ir.Glob{"web"}},
		},
	}
}

func requestBase() ir.PolicyMatch {
	return ir.PolicyMatch{
		Ports:    []ir.PortMatch{{Protocol: ir.IPProtocolTCP, Port: 8080}, {Protocol: ir.IPProtocolTCP, Port: 9000, EndPort: 9010}},
		NotPorts: []ir.PortMatch{{Protocol: ir.IPProtocolTCP, Port: 15000}},
		L7: []ir.L7Condition{
			{Attribute: ir.L7Method, Values: []ir.Glob{"GET", "HEAD"}},
			{Attribute: ir.L7Path, Values: []ir.Glob{"/api/*", "/v1/{*}/x"}, NotValues: []ir.Glob{"/admin*"}},
			{Attribute: ir.L7Host, Values: []ir.Glob{"*.example.com"}},
			{Attribute: ir.L7SNI, Values: []ir.Glob{"a.example.com"}},
			{Attribute: ir.L7DestinationIP, Values: []ir.Glob{"10.0.0.1/32"}},
			{Attribute: ir.L7Metadata, Name: "envoy.filters.x", Path: []string{"k", "l"}, Values: []ir.Glob{"v"}},
		},
	}
}

// sharingVariants are matches that differ from a base in one thing each:
// a field's value, which field holds a value, an attribute, a header name,
// a claim's path, a port range's end. Two of them rendered as the same
// policy would mean the shared build's key misses that difference.
func sharingVariants() map[string]ir.PolicyMatch {
	out := map[string]ir.PolicyMatch{"peer": peerBase(), "request": requestBase()}
	peer := func(name string, f func(m *ir.PolicyMatch)) {
		m := peerBase()
		f(&m)
		out["peer/"+name] = m
	}
	req := func(name string, f func(m *ir.PolicyMatch)) {
		m := requestBase()
		f(&m)
		out["request/"+name] = m
	}
	peer("principal", func(m *ir.PolicyMatch) { m.Principals[0] = "cluster.local/ns/a/sa/y" })
	peer("one principal fewer", func(m *ir.PolicyMatch) { m.Principals = m.Principals[:1] })
	peer("principal split differently", func(m *ir.PolicyMatch) {
		m.Principals = []ir.Glob{"cluster.local/ns/a/sa/x*", "/sa/admin"}
	})
	peer("notPrincipal", func(m *ir.PolicyMatch) { m.NotPrincipals[0] = "x" })
	peer("namespace", func(m *ir.PolicyMatch) { m.Namespaces[1] = "team-b*" })
	peer("namespace as notNamespace", func(m *ir.PolicyMatch) {
		m.NotNamespaces = append(m.NotNamespaces, m.Namespaces[1])
		m.Namespaces = m.Namespaces[:1]
	})
	peer("notNamespace", func(m *ir.PolicyMatch) { m.NotNamespaces[0] = "default" })
	peer("ipBlock", func(m *ir.PolicyMatch) { m.IPBlocks[0].CIDR = netip.MustParsePrefix("10.0.0.0/9") })
	peer("ipBlock except", func(m *ir.PolicyMatch) { m.IPBlocks[0].Except[0] = netip.MustParsePrefix("10.2.0.0/16") })
	peer("ipBlock IPv6", func(m *ir.PolicyMatch) { m.IPBlocks[0].CIDR = netip.MustParsePrefix("::ffff:10.0.0.0/104") })
	peer("notIPBlock", func(m *ir.PolicyMatch) { m.NotIPBlocks[0].CIDR = netip.MustParsePrefix("192.168.1.0/24") })
	peer("ipBlock as notIPBlock", func(m *ir.PolicyMatch) { m.IPBlocks, m.NotIPBlocks = m.NotIPBlocks, m.IPBlocks })
	peer("trustDomain", func(m *ir.PolicyMatch) { m.TrustDomains[0] = "other.td" })
	peer("notTrustDomain", func(m *ir.PolicyMatch) { m.NotTrustDomains[0] = "*.evil" })
	peer("trustDomain as principal", func(m *ir.PolicyMatch) {
		m.Principals = append(m.Principals, m.TrustDomains...)
		m.TrustDomains = nil
	})
	peer("header name", func(m *ir.PolicyMatch) { m.L7[2].Name = "x-other" })
	peer("header value", func(m *ir.PolicyMatch) { m.L7[2].Values[0] = "t-3" })
	peer("header notValue as value", func(m *ir.PolicyMatch) {
		m.L7[2].Values, m.L7[2].NotValues = m.L7[2].NotValues, m.L7[2].Values
	})
	peer("claim path", func(m *ir.PolicyMatch) { m.L7[3].Path = []string{"groups"} })
	peer("claim path split differently", func(m *ir.PolicyMatch) { m.L7[3].Path = []string{"group", "sa"} })
	peer("audience as presenter", func(m *ir.PolicyMatch) { m.L7[4].Attribute = ir.L7Presenter })
	peer("request principal", func(m *ir.PolicyMatch) { m.L7[0].Values[0] = "https://idp/users/bob" })
	peer("remote IP", func(m *ir.PolicyMatch) { m.L7[1].Values[0] = "172.16.0.0/13" })
	peer("conditions reordered", func(m *ir.PolicyMatch) { m.L7[4], m.L7[5] = m.L7[5], m.L7[4] })
	req("port", func(m *ir.PolicyMatch) { m.Ports[0].Port = 8081 })
	req("port range end", func(m *ir.PolicyMatch) { m.Ports[1].EndPort = 9011 })
	req("notPort", func(m *ir.PolicyMatch) { m.NotPorts[0].Port = 15001 })
	req("port as notPort", func(m *ir.PolicyMatch) { m.Ports, m.NotPorts = m.NotPorts, m.Ports })
	req("method", func(m *ir.PolicyMatch) { m.L7[0].Values = []ir.Glob{"GET"} })
	req("method as host", func(m *ir.PolicyMatch) { m.L7[0].Attribute = ir.L7Host })
	req("path", func(m *ir.PolicyMatch) { m.L7[1].Values[1] = "/v1/{**}/x" })
	req("notPath", func(m *ir.PolicyMatch) { m.L7[1].NotValues[0] = "/admin/*" })
	req("sni", func(m *ir.PolicyMatch) { m.L7[3].Values[0] = "b.example.com" })
	req("destination IP", func(m *ir.PolicyMatch) { m.L7[4].Values[0] = "10.0.0.2/32" })
	req("metadata filter", func(m *ir.PolicyMatch) { m.L7[5].Name = "envoy.filters.y" })
	req("metadata path", func(m *ir.PolicyMatch) { m.L7[5].Path = []string{"k"} })
	req("metadata path split differently", func(m *ir.PolicyMatch) { m.L7[5].Path = []string{"kl"} })
	return out
}

// sharingRules is every variant as a rule of its own, and rules built from
// them with different clause structures (one clause of two matches, two
// clauses of one, the matches in the other order), each rule twice.
func sharingRules() []ir.PolicyRule {
	vs := sharingVariants()
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range vs {
			if !yield(n) {
				return
			}
		}
	})
	var rules []ir.PolicyRule
	add := func(field string, cs ...ir.PolicyClause) {
		rules = append(rules, ir.PolicyRule{Direction: ir.PolicyIngress, Field: field, Clauses: cs})
	}
	clause := func(ms ...ir.PolicyMatch) ir.PolicyClause { return ir.PolicyClause{Matches: ms} }
	p, p2, r := vs["peer"], vs["peer/namespace"], vs["request"]
	for range 2 {
		for _, n := range names {
			add(n, clause(vs[n]))
		}
		add("from: two sources", clause(p, p2), clause(r))
		add("from: two sources, other order", clause(p2, p), clause(r))
		add("from and when: one source each", clause(p), clause(p2), clause(r))
		add("to: two operations", clause(p), clause(r, vs["request/port"]))
		// The same matches in the same order, grouped into clauses
		// differently.
		add("grouped: two sources, two conditions", clause(p, p2), clause(r), clause(vs["request/port"]))
		add("grouped: two conditions, two operations", clause(p), clause(p2), clause(r, vs["request/port"]))
		add("no clause")
		add("a clause without matches", clause(p), ir.PolicyClause{})
		add("an empty match", clause(p, ir.PolicyMatch{}), clause(r))
	}
	return rules
}

// TestRBACSharingIdentical: the shared build (rules with the same body
// rendered and validated once, one policy for all of them) emits exactly
// what the unshared build does — for rules that differ from one another
// in one field each, in every action and shadow set, HTTP and TCP — and
// does share (the test would pass vacuously if it did not).
func TestRBACSharingIdentical(t *testing.T) {
	rules := sharingRules()
	var pols []ir.Policy
	for i, a := range []ir.PolicyAction{ir.PolicyAllow, ir.PolicyDeny, ir.PolicyAudit} {
		p := authzPolicy(fmt.Sprintf("p%d", i), a, rules...)
		pols = append(pols, p)
		p.Source.Name += "-dry-run"
		p.DryRun = true
		pols = append(pols, p)
	}
	custom := authzPolicy("custom", ir.PolicyDeny, rules...)
	custom.Custom = "ext"
	pols = append(pols, custom, authzPolicy("empty", ir.PolicyAllow))
	for _, tcp := range []bool{false, true} {
		t.Run(fmt.Sprintf("tcp=%v", tcp), func(t *testing.T) {
			shared, sdiags, err := buildRBAC(pols, tcp, true)
			if err != nil {
				t.Fatal(err)
			}
			alone, adiags, err := buildRBAC(pols, tcp, false)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(sdiags) != fmt.Sprint(adiags) {
				t.Errorf("diagnostics differ:\nshared   %v\nunshared %v", sdiags, adiags)
			}
			if len(shared) != len(alone) {
				t.Fatalf("%d filters shared, %d unshared", len(shared), len(alone))
			}
			for i := range shared {
				s, a := rbacSets(shared[i]), rbacSets(alone[i])
				for j := range s {
					for name, want := range a[j].GetPolicies() {
						if got := s[j].GetPolicies()[name]; !proto.Equal(got, want) {
							t.Errorf("filter %d (%s) policy %s differs from the unshared build:\nshared   %v\nunshared %v", i, shared[i].Action, name, got, want)
						}
					}
				}
				sb, err := proto.MarshalOptions{Deterministic: true}.Marshal(shared[i].Config)
				if err != nil {
					t.Fatal(err)
				}
				ab, err := proto.MarshalOptions{Deterministic: true}.Marshal(alone[i].Config)
				if err != nil {
					t.Fatal(err)
				}
				if string(sb) != string(ab) {
					t.Errorf("filter %d (%s): %d bytes shared, %d unshared, not the same", i, shared[i].Action, len(sb), len(ab))
				}
			}
			// The second copy of each rule is the first's policy (in the
			// DENY filter: TCP leaves ALLOW rules with HTTP facts out).
			deny := rbacSets(shared[1])[0].GetPolicies()
			first, second := deny[RBACName(&pols[2], 0)], deny[RBACName(&pols[2], len(rules)/2)]
			if first == nil || first != second {
				t.Errorf("identical rules do not share their policy")
			}
		})
	}
}

// rbacSets is a filter's rules and shadow rules.
func rbacSets(f RBACFilter) [2]*rbacv3.RBAC {
	switch c := f.Config.(type) {
	case *rbachttpv3.RBAC:
		return [2]*rbacv3.RBAC{c.GetRules(), c.GetShadowRules()}
	case *rbacnetv3.RBAC:
		return [2]*rbacv3.RBAC{c.GetRules(), c.GetShadowRules()}
	}
	return [2]*rbacv3.RBAC{}
}

// TestRBACSharingErrors: a rule that cannot be built fails the build with
// the error the unshared build gives, naming that rule's own fields even
// when an identical body elsewhere failed first.
func TestRBACSharingErrors(t *testing.T) {
	mixed := ir.PolicyMatch{Namespaces: []ir.Glob{"a"}, L7: []ir.L7Condition{{Attribute: ir.L7Method, Values: []ir.Glob{"GET"}}}}
	workloads := ir.PolicyMatch{Workloads: []ir.WorkloadSelector{{Namespace: "x"}}}
	badHeader := ir.PolicyMatch{L7: []ir.L7Condition{{Attribute: ir.L7Header, Name: "bad\nname", Values: []ir.Glob{"x"}}}}
	for name, m := range map[string]ir.PolicyMatch{"mixed sides": mixed, "workload selector": workloads, "invalid header": badHeader} {
		t.Run(name, func(t *testing.T) {
			var rules []ir.PolicyRule
			for i := range 50 {
				rules = append(rules, one(fmt.Sprintf("spec.rules[%d]", i), m))
			}
			pols := []ir.Policy{authzPolicy("a", ir.PolicyAllow, rules...), authzPolicy("b", ir.PolicyAllow, rules...)}
			_, _, serr := buildRBAC(pols, false, true)
			_, _, aerr := buildRBAC(pols, false, false)
			if serr == nil || aerr == nil || serr.Error() != aerr.Error() {
				t.Errorf("shared build: %v\nunshared build: %v", serr, aerr)
			}
		})
	}
}

// TestRuleKeyCoversPolicyModel: the share key (ruleKey) encodes every
// field of the policy model that rendering reads. A field added to the
// model fails this test until ruleKey encodes it or it is listed here as
// not rendered.
func TestRuleKeyCoversPolicyModel(t *testing.T) {
	const inKey = "in ruleKey"
	covered := map[reflect.Type]map[string]string{
		reflect.TypeFor[ir.PolicyRule](): {
			"Direction": "not rendered", "Field": "error messages only (rebuilt per rule)",
			"Clauses": inKey, "Degradations": "not rendered",
		},
		reflect.TypeFor[ir.PolicyClause](): {"Field": "error messages only (rebuilt per rule)", "Matches": inKey},
		reflect.TypeFor[ir.PolicyMatch](): {
			"Field": "error messages only (rebuilt per rule)", "Workloads": "their number: any is an error (matchSide)",
			"Principals": inKey, "NotPrincipals": inKey, "Namespaces": inKey, "NotNamespaces": inKey,
			"IPBlocks": inKey, "NotIPBlocks": inKey, "TrustDomains": inKey, "NotTrustDomains": inKey,
			"Ports": inKey, "NotPorts": inKey, "L7": inKey,
		},
		reflect.TypeFor[ir.IPBlock]():     {"CIDR": inKey, "Except": inKey},
		reflect.TypeFor[ir.PortMatch]():   {"Protocol": inKey, "Port": inKey, "EndPort": inKey, "Name": inKey},
		reflect.TypeFor[ir.L7Condition](): {"Attribute": inKey, "Name": inKey, "Path": inKey, "Values": inKey, "NotValues": inKey},
	}
	for typ, fields := range covered {
		seen := map[string]bool{}
		for i := range typ.NumField() {
			f := typ.Field(i)
			seen[f.Name] = true
			if _, ok := fields[f.Name]; !ok {
				t.Errorf("%s.%s is not accounted for by ruleKey: encode it there (rbac_share.go) or list it here as not rendered", typ, f.Name)
			}
		}
		for name := range fields {
			if !seen[name] {
				t.Errorf("%s.%s is listed but no longer exists", typ, name)
			}
		}
	}
}

// TestRBACFilterPackedOnce: a filter BuildRBAC returns is packed once for
// all the chains it goes into, and the shared Any is what packing its
// configuration gives.
func TestRBACFilterPackedOnce(t *testing.T) {
	pols := []ir.Policy{authzPolicy("a", ir.PolicyAllow, sharingRules()...)}
	for _, tcp := range []bool{false, true} {
		filters, _, err := BuildRBAC(pols, tcp)
		if err != nil || len(filters) != 1 {
			t.Fatalf("filters %v, error %v", filters, err)
		}
		f := filters[0]
		packed := func() *anypb.Any {
			if tcp {
				nf, err := f.NetworkFilter()
				if err != nil {
					t.Fatal(err)
				}
				return nf.GetTypedConfig()
			}
			hf, err := f.HTTPFilter()
			if err != nil {
				t.Fatal(err)
			}
			return hf.GetTypedConfig()
		}
		first, second := packed(), packed()
		if first != second {
			t.Errorf("tcp=%v: packed twice", tcp)
		}
		want, err := packDeterministic(f.Config)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(first, want) {
			t.Errorf("tcp=%v: the shared Any is not the configuration's", tcp)
		}
	}
}

// BenchmarkRBACDistinct: BenchmarkAuthorizationPolicies' shape as model
// rules (translate's benchmark cannot reach the unshared build), but every
// rule distinct — a principal and a path of its own — so that only the
// match sharing can help: the cost of sharing where rules do not repeat,
// shared and unshared (docs/benchmarks.md).
func BenchmarkRBACDistinct(b *testing.B) {
	var pols []ir.Policy
	for i := range 1000 {
		var rules []ir.PolicyRule
		for r := range 10 {
			src1 := ir.PolicyMatch{Principals: []ir.Glob{ir.Glob(fmt.Sprintf("cluster.local/ns/ns-%d/sa/client-%d-%d", i%50, i, r)), "*/sa/admin"}}
			src2 := ir.PolicyMatch{Namespaces: []ir.Glob{"ns-1", "team-*"}, IPBlocks: []ir.IPBlock{{CIDR: netip.MustParsePrefix("10.0.0.0/8")}}}
			op1 := ir.PolicyMatch{Ports: []ir.PortMatch{{Protocol: ir.IPProtocolTCP, Port: 8080}}, L7: []ir.L7Condition{{Attribute: ir.L7Method, Values: []ir.Glob{"GET", "HEAD"}}, {Attribute: ir.L7Path, Values: []ir.Glob{ir.Glob(fmt.Sprintf("/api/%d/v%d/*", i, r)), "/healthz"}}}}
			op2 := ir.PolicyMatch{L7: []ir.L7Condition{{Attribute: ir.L7Host, Values: []ir.Glob{"*.example.com"}}, {Attribute: ir.L7Path, NotValues: []ir.Glob{"/admin/*"}}}}
			when := ir.PolicyMatch{L7: []ir.L7Condition{{Attribute: ir.L7Header, Name: "x-tenant", Values: []ir.Glob{ir.Glob(fmt.Sprintf("t-%d", r))}}}}
			rules = append(rules, ir.PolicyRule{Clauses: []ir.PolicyClause{{Matches: []ir.PolicyMatch{src1, src2}}, {Matches: []ir.PolicyMatch{op1, op2}}, {Matches: []ir.PolicyMatch{when}}}})
		}
		a := ir.PolicyAllow
		if i%4 == 0 {
			a = ir.PolicyDeny
		}
		p := authzPolicy(fmt.Sprintf("p-%d", i), a, rules...)
		pols = append(pols, p)
	}
	for _, share := range []bool{false, true} {
		b.Run(fmt.Sprintf("share=%v", share), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := buildRBAC(pols, false, share); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
