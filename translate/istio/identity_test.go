package istio

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// TestSplitByIdentity: each chain that can reach a cluster with Istio mTLS
// gets a copy per identity holding the addresses it served of that
// identity; the host prefixes moved leave the chain (a class chain left
// with none is dropped, one left with an address of no identity keeps it),
// a wider prefix stays (the copies' host prefixes are more specific), and a
// chain that reaches no such cluster is not split.
func TestSplitByIdentity(t *testing.T) {
	const a, b = "spiffe://td/ns/x/sa/a", "spiffe://td/ns/x/sa/b"
	mtls := map[string]*ir.IstioMTLS{"svc": {Auto: true}}
	http := &ir.HTTPConnectionManager{RouteConfigName: "80"}
	tcp := func(c string) *ir.TCPProxy { return &ir.TCPProxy{Destinations: []ir.WeightedDestination{{Cluster: c}}} }
	l := ir.Listener{FilterChains: []ir.FilterChain{
		{Name: "blackhole", Match: ir.FilterChainMatch{DestinationPort: 15001}, TCP: tcp(ir.BlackHoleCluster)},
		{Name: "http", Match: ir.FilterChainMatch{DestinationPort: 80}, HTTP: http},
		{Name: "http~class1", Match: ir.FilterChainMatch{DestinationPort: 80, SourcePrefixes: []string{"10.0.0.1/32"}}, HTTP: http},
		{Name: "http~class2", Match: ir.FilterChainMatch{DestinationPort: 80, SourcePrefixes: []string{"10.0.0.2/32", "10.0.0.9/32"}}, HTTP: http},
		{Name: "tcp", Match: ir.FilterChainMatch{DestinationPort: 5432, DestinationPrefixes: []string{"10.96.0.1/32"}}, TCP: tcp("svc")},
		{Name: "tcp~wide", Match: ir.FilterChainMatch{DestinationPort: 5432, DestinationPrefixes: []string{"10.96.0.1/32"}, SourcePrefixes: []string{"10.0.0.0/30"}}, TCP: tcp("svc")},
	}}
	splitByIdentity(&l, []ir.ClientIdentity{
		{SPIFFE: a, Addresses: []string{"10.0.0.1", "10.0.0.3", "10.0.0.5"}},
		{SPIFFE: b, Addresses: []string{"10.0.0.2", "10.0.0.4", "10.0.0.5"}}, // 10.0.0.5: both claim it
	}, mtls)
	got := map[string][]string{}
	ids := map[string]string{}
	for _, fc := range l.FilterChains {
		got[fc.Name] = fc.Match.SourcePrefixes
		ids[fc.Name] = fc.ClientIdentity
	}
	// 10.0.0.5 is claimed by both: no identity, no copy.
	want := map[string][]string{
		"blackhole":        nil,
		"http":             nil,
		"http@" + a:        {"10.0.0.3/32"},
		"http@" + b:        {"10.0.0.4/32"},
		"http~class1@" + a: {"10.0.0.1/32"}, // http~class1 itself is dropped
		"http~class2":      {"10.0.0.9/32"},
		"http~class2@" + b: {"10.0.0.2/32"},
		"tcp":              nil,
		"tcp@" + b:         {"10.0.0.4/32"},
		"tcp~wide":         {"10.0.0.0/30"},
		"tcp~wide@" + a:    {"10.0.0.1/32", "10.0.0.3/32"},
		"tcp~wide@" + b:    {"10.0.0.2/32"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("chains (-want +got):\n%s", d)
	}
	for name, id := range ids {
		wantID := ""
		if _, suffix, ok := strings.Cut(name, "@"); ok {
			wantID = suffix
		}
		if id != wantID {
			t.Errorf("chain %s stores %q, want %q", name, id, wantID)
		}
	}
}
