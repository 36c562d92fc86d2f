package mapsync

import (
	"testing"

	"github.com/nodemesh/nodemesh/bpf"
)

// BenchmarkNewPlan: planning 10,000 new entries (one server identity,
// 2,500 client identities, 4 ports: BenchmarkPolicyApply's policy) into
// empty maps, without a kernel.
func BenchmarkNewPlan(b *testing.B) {
	want := Want{Policies: map[bpf.PolicyKey]bpf.Verdict{}}
	for i := range 2500 {
		for p := range 4 {
			want.Policies[bpf.PolicyKey{Endpoint: 300, Peer: bpf.Identity(1300 + i), Port: uint16(8000 + p), Proto: bpf.ProtoTCP}] = bpf.Allow
		}
	}
	have := clone(State{})
	b.ReportAllocs()
	for b.Loop() {
		if p := NewPlan(have, want); p.Writes() != len(want.Policies) {
			b.Fatalf("%d writes", p.Writes())
		}
	}
}
