//go:build linux

package bpf

import "testing"

// TestPolicyPortRanges runs packets through the program with port range
// entries (nm_policy_ranges): a range of any width is enforced exactly,
// and a deny wins over an allow whichever map either is in.
func TestPolicyPortRanges(t *testing.T) {
	ranges := func(p *Policy, v Verdict, peer Identity, first, last uint16, proto uint8, dir Direction) func(*testing.T) {
		return func(t *testing.T) {
			t.Helper()
			var keys []PortRangeKey
			var vs []Verdict
			for _, b := range PortBlocks(first, last) {
				keys = append(keys, PortRangeKey{Endpoint: podID, Peer: peer, Dir: dir, Proto: proto, Block: b})
				vs = append(vs, v)
			}
			if err := p.PutPortRanges(keys, vs); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := map[string]struct {
		setup func(p *Policy) []func(*testing.T)
		steps []step
	}{
		"ephemeral range 1024-65535 (wider than the old 1,024-port limit)": {
			setup: func(p *Policy) []func(*testing.T) {
				return []func(*testing.T){ranges(p, Allow, pod2ID, 1024, 65535, ProtoTCP, Ingress)}
			},
			steps: []step{
				{"40000 in range", Ingress, syn(pod2IP, 50000, podIP, 40000).bytes(), ReasonAllowedPolicy},
				{"1024, first", Ingress, syn(pod2IP, 50001, podIP, 1024).bytes(), ReasonAllowedPolicy},
				{"65535, last", Ingress, syn(pod2IP, 50002, podIP, 65535).bytes(), ReasonAllowedPolicy},
				{"80 below", Ingress, syn(pod2IP, 50003, podIP, 80).bytes(), ReasonDeniedDefault},
				{"1023 just below", Ingress, syn(pod2IP, 50004, podIP, 1023).bytes(), ReasonDeniedDefault},
				{"other peer", Ingress, syn(pod3IP, 50005, podIP, 40000).bytes(), ReasonDeniedDefault},
				{"UDP", Ingress, udp(pod2IP, 50006, podIP, 40000).bytes(), ReasonDeniedDefault},
				{"egress direction", Egress, syn(podIP, 50007, pod2IP, 40000).bytes(), ReasonDeniedDefault},
			},
		},
		"unaligned range": {
			setup: func(p *Policy) []func(*testing.T) {
				return []func(*testing.T){ranges(p, Allow, IdentityAny, 1000, 3001, ProtoUDP, Ingress)}
			},
			steps: []step{
				{"999", Ingress, udp(pod3IP, 50000, podIP, 999).bytes(), ReasonDeniedDefault},
				{"1000", Ingress, udp(pod3IP, 50001, podIP, 1000).bytes(), ReasonAllowedPolicy},
				{"3001", Ingress, udp(pod3IP, 50002, podIP, 3001).bytes(), ReasonAllowedPolicy},
				{"3002", Ingress, udp(pod3IP, 50003, podIP, 3002).bytes(), ReasonDeniedDefault},
			},
		},
		"a single-port deny in the hash beats a range allow": {
			setup: func(p *Policy) []func(*testing.T) {
				return []func(*testing.T){ranges(p, Allow, pod2ID, 1024, 65535, ProtoTCP, Ingress),
					func(t *testing.T) {
						if err := p.PutPolicy(PolicyKey{Endpoint: podID, Peer: IdentityAny, Port: 40000, Proto: ProtoTCP, Dir: Ingress}, Deny); err != nil {
							t.Fatal(err)
						}
					}}
			},
			steps: []step{
				{"denied port", Ingress, syn(pod2IP, 50000, podIP, 40000).bytes(), ReasonDeniedPolicy},
				{"rest of the range", Ingress, syn(pod2IP, 50001, podIP, 40001).bytes(), ReasonAllowedPolicy},
			},
		},
		"a range deny beats a single-port allow in the hash": {
			setup: func(p *Policy) []func(*testing.T) {
				return []func(*testing.T){allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 8080, Proto: ProtoTCP, Dir: Ingress}),
					ranges(p, Deny, IdentityAny, 8000, 8999, ProtoTCP, Ingress)}
			},
			steps: []step{
				{"allowed port inside the denied range", Ingress, syn(pod2IP, 50000, podIP, 8080).bytes(), ReasonDeniedPolicy},
				{"outside: default", Ingress, syn(pod2IP, 50001, podIP, 9000).bytes(), ReasonDeniedDefault},
			},
		},
		"a longer deny block inside an allow range": {
			setup: func(p *Policy) []func(*testing.T) {
				return []func(*testing.T){ranges(p, Allow, pod2ID, 1024, 65535, ProtoTCP, Ingress),
					ranges(p, Deny, pod2ID, 40000, 40009, ProtoTCP, Ingress)}
			},
			steps: []step{
				{"denied block", Ingress, syn(pod2IP, 50000, podIP, 40005).bytes(), ReasonDeniedPolicy},
				{"next to it", Ingress, syn(pod2IP, 50001, podIP, 40010).bytes(), ReasonAllowedPolicy},
			},
		},
		"ICMP never matches a range": {
			setup: func(p *Policy) []func(*testing.T) {
				return []func(*testing.T){ranges(p, Allow, IdentityAny, 1, 65535, ProtoICMP, Ingress)}
			},
			steps: []step{
				{"echo", Ingress, icmp(pod2IP, podIP, 8, 1234).bytes(), ReasonDeniedDefault},
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := loadTestPolicy(t, EnforceIngress|EnforceEgress)
			for _, do := range tc.setup(p) {
				do(t)
			}
			for _, s := range tc.steps {
				runStep(t, p, s)
			}
		})
	}
}

// TestPortRangesListing: what PutPortRanges writes, PortRanges reads back,
// and DeletePortRanges removes.
func TestPortRangesListing(t *testing.T) {
	p := loadTestPolicy(t, 0)
	want := map[PortRangeKey]Verdict{}
	var keys []PortRangeKey
	var vs []Verdict
	for _, b := range PortBlocks(1000, 3001) {
		k := PortRangeKey{Endpoint: podID, Peer: pod2ID, Dir: Egress, Proto: ProtoSCTP, Block: b}
		keys, vs, want[k] = append(keys, k), append(vs, Deny), Deny
	}
	if err := p.PutPortRanges(keys, vs); err != nil {
		t.Fatal(err)
	}
	got, err := p.PortRanges()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%+v = %v, want %v", k, got[k], v)
		}
	}
	if err := p.PutPortRanges([]PortRangeKey{{Block: PortBlock{Port: 3, Bits: 15}}}, []Verdict{Allow}); err == nil {
		t.Error("an unaligned block was written")
	}
	if err := p.DeletePortRanges(append(keys, keys[0])); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.PortRanges(); len(got) != 0 {
		t.Errorf("left %v", got)
	}
}
