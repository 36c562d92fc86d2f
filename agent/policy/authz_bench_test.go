package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"testing"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/agent/mapsync"
	"github.com/nodemesh/nodemesh/bpf"
)

// l4AuthzCluster is the benchmark's cluster: 50 namespaces × 20 apps, one
// identity each (service account client-<app>), 110 meshed pods on this
// node (Kubernetes' default pod limit: 2 pods of the first 55 apps), and
// 1,000 AuthorizationPolicies × 10 rules of L4 facts only (principals,
// namespaces, an ipBlock outside the pods' addresses, ports; notPorts in
// one rule of ten) — the work the agent does for every policy: an L7 rule
// projects to "never matches" and costs nothing.
func l4AuthzCluster() (Input, []*securityv1.AuthorizationPolicy) {
	in := Input{Namespaces: map[string]map[string]string{}, PeerAddrs: map[bpf.Identity][]netip.Addr{}}
	id := bpf.Identity(1000)
	for n := range 50 {
		ns := fmt.Sprintf("ns-%d", n)
		in.Namespaces[ns] = map[string]string{"kubernetes.io/metadata.name": ns}
		for a := range 20 {
			labels := map[string]string{"app": fmt.Sprintf("app-%d", a)}
			in.Identities = append(in.Identities, Identity{ID: id, Namespace: ns, ServiceAccount: fmt.Sprintf("client-%d", a), Labels: labels})
			addr := netip.AddrFrom4([4]byte{10, 244, byte(n), byte(a)})
			in.PeerAddrs[id] = []netip.Addr{addr}
			if len(in.Endpoints) < 110 {
				for p := range 2 {
					in.Endpoints = append(in.Endpoints, Endpoint{Namespace: ns, Name: fmt.Sprintf("app-%d-%d", a, p), Labels: labels, Identity: id,
						Key: bpf.EndpointKey(len(in.Endpoints) + 10), Meshed: true})
				}
			}
			id++
		}
	}
	var aps []*securityv1.AuthorizationPolicy
	for i := range 1000 {
		ns := fmt.Sprintf("ns-%d", i%50)
		ap := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%d", i), Namespace: ns}}
		ap.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i%20)}}
		if i%4 == 0 {
			ap.Spec.Action = securityapi.AuthorizationPolicy_DENY
		}
		for r := range 10 {
			ap.Spec.Rules = append(ap.Spec.Rules, &securityapi.Rule{
				From: []*securityapi.Rule_From{
					{Source: &securityapi.Source{Principals: []string{fmt.Sprintf("cluster.local/ns/%s/sa/client-%d", ns, r), "*/sa/client-19"}}},
					{Source: &securityapi.Source{Namespaces: []string{fmt.Sprintf("ns-%d", (i+r)%50)}, IpBlocks: []string{"192.168.0.0/16"}}},
				},
				To: []*securityapi.Rule_To{{Operation: &securityapi.Operation{Ports: []string{fmt.Sprint(8000 + r), "9090"}}}},
			})
			if r == 0 {
				last := ap.Spec.Rules[len(ap.Spec.Rules)-1]
				last.To = append(last.To, &securityapi.Rule_To{Operation: &securityapi.Operation{NotPorts: []string{"22"}}})
			}
		}
		aps = append(aps, ap)
	}
	return in, aps
}

// BenchmarkAuthorizationPolicyL4 is issue 14's "applying their L4 part to
// the maps" (target ≤ 100 ms): the agent's work for 1,000
// AuthorizationPolicies × 10 rules on a node of 110 meshed pods — the
// model (translate/authz), the map entries (agent/policy), and the plan of
// writes into empty maps (agent/mapsync; the kernel writes themselves are
// BenchmarkPolicyApply's) — phase by phase and together.
func BenchmarkAuthorizationPolicyL4(b *testing.B) {
	base, aps := l4AuthzCluster()
	models := func() Input {
		in := base
		in.CIDRs = NewCIDRAllocator(nil)
		m, diags := AuthorizationPolicyModels(aps, AuthzOptions{})
		if len(diags) > 0 {
			b.Fatalf("diagnostics: %v", diags[0])
		}
		in.Models = m
		return in
	}
	plan := func(res *Result) int {
		want := mapsync.Want{Identities: map[netip.Prefix]bpf.Identity{}, Policies: map[bpf.PolicyKey]bpf.Verdict{}, Ranges: map[bpf.PortRangeKey]bpf.Verdict{}}
		maps.Copy(want.Identities, res.CIDRs)
		for _, ip := range res.Identities {
			maps.Copy(want.Policies, ip.Entries)
			maps.Copy(want.Ranges, ip.Ranges)
		}
		return mapsync.NewPlan(mapsync.State{}, want).Writes()
	}
	in := models()
	res := Translate(in)
	b.Logf("%d endpoints, %d identities, %d policy entries, %d range entries, %d writes",
		len(in.Endpoints), len(in.Identities), entriesOf(res), rangesOf(res), plan(res))
	b.Run("models", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			models()
		}
	})
	b.Run("entries", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			in.CIDRs = NewCIDRAllocator(nil)
			Translate(in)
		}
	})
	b.Run("plan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			plan(res)
		}
	})
	b.Run("all", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			plan(Translate(models()))
		}
	})
}

func entriesOf(r *Result) (n int) {
	for _, ip := range r.Identities {
		n += len(ip.Entries)
	}
	return n
}

func rangesOf(r *Result) (n int) {
	for _, ip := range r.Identities {
		n += len(ip.Ranges)
	}
	return n
}
