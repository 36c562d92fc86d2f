//go:build linux

package bpf

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

const benchEntries = 10_000

// benchPolicies is benchEntries distinct entries for the test endpoint:
// 2,500 peers x 4 ports, none of them matching the benchmark packets.
func benchPolicies() ([]PolicyKey, []Verdict) {
	keys := make([]PolicyKey, 0, benchEntries)
	verdicts := make([]Verdict, 0, benchEntries)
	for i := range benchEntries {
		keys = append(keys, PolicyKey{
			Endpoint: podID,
			Peer:     IdentityFirstAllocated + 10_000 + Identity(i/4),
			Port:     uint16(8000 + i%4),
			Proto:    ProtoTCP,
			Dir:      Ingress,
		})
		verdicts = append(verdicts, Allow)
	}
	return keys, verdicts
}

// BenchmarkPolicyDecision measures the in-kernel cost of one packet with
// 10,000 policy entries loaded (BPF_PROG_TEST_RUN, repeated in the kernel).
func BenchmarkPolicyDecision(b *testing.B) {
	requireBPF(b)
	p, err := LoadPolicy(LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ep := Endpoint{IP: ip4(podIP), Identity: podID, Flags: EnforceIngress}
	if err := p.PutEndpoint(testIfindex, ep); err != nil {
		b.Fatal(err)
	}
	keys, verdicts := benchPolicies()
	keys = append(keys, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 8080, Proto: ProtoTCP, Dir: Ingress})
	verdicts = append(verdicts, Allow)
	if err := p.PutPolicies(keys, verdicts); err != nil {
		b.Fatal(err)
	}
	// A port range (20000-29999: 8 blocks) for the allowed peer, so that
	// every new flow also walks a non-empty trie.
	var rkeys []PortRangeKey
	var rvs []Verdict
	for _, blk := range PortBlocks(20000, 29999) {
		rkeys = append(rkeys, PortRangeKey{Endpoint: podID, Peer: pod2ID, Dir: Ingress, Proto: ProtoTCP, Block: blk})
		rvs = append(rvs, Allow)
	}
	if err := p.PutPortRanges(rkeys, rvs); err != nil {
		b.Fatal(err)
	}
	for ip, id := range map[string]Identity{pod2IP: pod2ID, pod3IP: pod3ID} {
		if err := p.PutIdentity(prefix32(ip), id); err != nil {
			b.Fatal(err)
		}
	}

	cases := map[string]struct {
		frame []byte
		want  uint32
		prime bool // send once before timing (opens the flow)
	}{
		// A SYN is always decided: identity lookup and all six policy
		// lookups, then default deny. The most work a packet can cause.
		"new flow denied": {syn(pod3IP, 40000, podIP, 8080).bytes(), actDrop, false},
		// A SYN that an entry allows, and that writes a conntrack entry.
		"new flow allowed": {syn(pod2IP, 40000, podIP, 8080).bytes(), actPass, false},
		// A SYN that a port range entry allows (the trie's longest match).
		"new flow allowed by a range": {syn(pod2IP, 40000, podIP, 25000).bytes(), actPass, false},
		// Any later packet of an allowed flow: one conntrack lookup.
		"established": {tcp(pod2IP, 40001, podIP, 8080, tcpACK).bytes(), actPass, true},
	}
	for _, name := range []string{"new flow denied", "new flow allowed", "new flow allowed by a range", "established"} {
		tc := cases[name]
		b.Run(name, func(b *testing.B) {
			if tc.prime {
				open := syn(pod2IP, 40001, podIP, 8080).bytes()
				if _, err := p.Program(Ingress).Run(&ebpf.RunOptions{Data: open}); err != nil {
					b.Fatal(err)
				}
			}
			ret, per, err := p.Program(Ingress).Benchmark(tc.frame, b.N, b.ResetTimer)
			if err != nil {
				b.Fatal(err)
			}
			if ret != tc.want {
				b.Fatalf("program returned %d, want %d", int32(ret), int32(tc.want))
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/packet")
		})
	}
}

// BenchmarkPolicyBatchUpdate measures writing 10,000 policy entries with one
// BatchUpdate (PutPolicies).
func BenchmarkPolicyBatchUpdate(b *testing.B) {
	requireBPF(b)
	p, err := LoadPolicy(LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	keys, verdicts := benchPolicies()
	b.ResetTimer()
	for b.Loop() {
		if err := p.PutPolicies(keys, verdicts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchEntries), "entries/op")
}

// BenchmarkTestRunOverhead is the floor under the numbers above: a program
// that only returns, run the same way.
func BenchmarkTestRunOverhead(b *testing.B) {
	requireBPF(b)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer prog.Close()
	_, per, err := prog.Benchmark(syn(pod2IP, 40000, podIP, 8080).bytes(), b.N, b.ResetTimer)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/packet")
}
