//go:build linux

package bpf

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
)

// The prog.Run tests run with the loopback device as skb->dev, so the
// endpoint under test is the one of ifindex 1.
const testIfindex = 1

const (
	podIP   = "10.244.1.2" // the endpoint under test, identity 1001
	pod2IP  = "10.244.2.2" // identity 2002
	pod3IP  = "10.244.3.2" // identity 3003
	nodeIP  = "10.244.0.1" // IdentityHost
	worldIP = "203.0.113.7"

	podID  Identity = 1001
	pod2ID Identity = 2002
	pod3ID Identity = 3003
)

// loadTestPolicy loads the policy objects with the endpoint of testIfindex
// (flags as given) and the identities above.
func loadTestPolicy(t *testing.T, flags EndpointFlags) *Policy {
	t.Helper()
	requireBPF(t)
	p, err := LoadPolicy(LoadOptions{})
	if err != nil {
		t.Fatalf("LoadPolicy: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	mustPutEndpoint(t, p, flags, 0)
	for ip, id := range map[string]Identity{pod2IP: pod2ID, pod3IP: pod3ID, nodeIP: IdentityHost, podIP: podID} {
		if err := p.PutIdentity(netip.PrefixFrom(netip.MustParseAddr(ip), 32), id); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func mustPutEndpoint(t *testing.T, p *Policy, flags EndpointFlags, rev uint32) {
	t.Helper()
	ep := Endpoint{IP: ip4(podIP), Identity: podID, Flags: flags, PolicyRevision: rev}
	if err := p.PutEndpoint(testIfindex, ep); err != nil {
		t.Fatal(err)
	}
}

func allow(p *Policy, k PolicyKey) func(*testing.T) {
	return func(t *testing.T) {
		t.Helper()
		if err := p.PutPolicy(k, Allow); err != nil {
			t.Fatal(err)
		}
	}
}

// step sends one frame through the program for dir and expects the packet to
// be counted under want (and so passed or dropped as want says).
type step struct {
	name  string
	dir   Direction
	frame []byte
	want  Reason
}

// runStep checks the verdict and that exactly one counter, [dir][want], moved
// by one packet of len(frame) bytes.
func runStep(t *testing.T, p *Policy, s step) {
	t.Helper()
	before, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	ret, err := p.Program(s.dir).Run(&ebpf.RunOptions{Data: s.frame})
	if err != nil {
		t.Fatalf("%s: run: %v", s.name, err)
	}
	after, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	wantRet := actPass
	if s.want.Dropped() {
		wantRet = actDrop
	}
	if ret != wantRet {
		t.Errorf("%s: program returned %d, want %d (%s)", s.name, int32(ret), int32(wantRet), s.want)
	}
	for d := range 2 {
		for r := range NumReasons {
			got := Count{after[d][r].Packets - before[d][r].Packets, after[d][r].Bytes - before[d][r].Bytes}
			want := Count{}
			if Direction(d) == s.dir && r == s.want {
				want = Count{1, uint64(len(s.frame))}
			}
			if got != want {
				t.Errorf("%s: counter %s/%s moved by %+v, want %+v", s.name, Direction(d), r, got, want)
			}
		}
	}
}

// action is a step that changes maps between packets.
type action struct {
	do   func(*testing.T)
	step step
}

func TestPolicyVerdicts(t *testing.T) {
	type scenario struct {
		flags EndpointFlags
		setup func(t *testing.T, p *Policy)
		steps func(p *Policy) []action
	}
	send := func(s step) action { return action{step: s} }
	tests := map[string]scenario{
		"allow": {
			flags: EnforceIngress,
			setup: func(t *testing.T, p *Policy) {
				allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 8080, Proto: ProtoTCP, Dir: Ingress})(t)
			},
			steps: func(*Policy) []action {
				return []action{
					send(step{"allowed peer and port", Ingress, syn(pod2IP, 40000, podIP, 8080).bytes(), ReasonAllowedPolicy}),
					send(step{"other port", Ingress, syn(pod2IP, 40001, podIP, 9090).bytes(), ReasonDeniedDefault}),
					send(step{"other peer", Ingress, syn(pod3IP, 40000, podIP, 8080).bytes(), ReasonDeniedDefault}),
					send(step{"other protocol", Ingress, udp(pod2IP, 40000, podIP, 8080).bytes(), ReasonDeniedDefault}),
					send(step{"egress is not isolated", Egress, syn(podIP, 40000, pod3IP, 8080).bytes(), ReasonAllowedUnenforced}),
				}
			},
		},
		"deny": {
			setup: func(t *testing.T, p *Policy) {
				if err := p.PutPolicy(PolicyKey{Endpoint: podID, Peer: pod3ID, Port: 8080, Proto: ProtoTCP, Dir: Ingress}, Deny); err != nil {
					t.Fatal(err)
				}
			},
			steps: func(*Policy) []action {
				return []action{
					send(step{"denied peer", Ingress, syn(pod3IP, 40000, podIP, 8080).bytes(), ReasonDeniedPolicy}),
					send(step{"other peer, not isolated", Ingress, syn(pod2IP, 40000, podIP, 8080).bytes(), ReasonAllowedUnenforced}),
					send(step{"denied peer, other port", Ingress, syn(pod3IP, 40000, podIP, 8081).bytes(), ReasonAllowedUnenforced}),
				}
			},
		},
		"deny wins over allow": {
			flags: EnforceIngress,
			setup: func(t *testing.T, p *Policy) {
				for k, v := range map[PolicyKey]Verdict{
					// exact allow, any-port deny
					{Endpoint: podID, Peer: pod2ID, Port: 8080, Proto: ProtoTCP, Dir: Ingress}: Allow,
					{Endpoint: podID, Peer: pod2ID, Port: 0, Proto: ProtoTCP, Dir: Ingress}:    Deny,
					// peer allow, any-peer deny
					{Endpoint: podID, Peer: pod3ID, Port: 9000, Proto: ProtoTCP, Dir: Ingress}:      Allow,
					{Endpoint: podID, Peer: IdentityAny, Port: 9000, Proto: ProtoTCP, Dir: Ingress}: Deny,
					// any-proto allow, exact deny
					{Endpoint: podID, Peer: pod3ID, Port: 0, Proto: ProtoAny, Dir: Ingress}:  Allow,
					{Endpoint: podID, Peer: pod3ID, Port: 53, Proto: ProtoUDP, Dir: Ingress}: Deny,
				} {
					if err := p.PutPolicy(k, v); err != nil {
						t.Fatal(err)
					}
				}
			},
			steps: func(*Policy) []action {
				return []action{
					send(step{"exact allow, any-port deny", Ingress, syn(pod2IP, 40000, podIP, 8080).bytes(), ReasonDeniedPolicy}),
					send(step{"peer allow, any-peer deny", Ingress, syn(pod3IP, 40000, podIP, 9000).bytes(), ReasonDeniedPolicy}),
					send(step{"any-proto allow, exact deny", Ingress, udp(pod3IP, 40000, podIP, 53).bytes(), ReasonDeniedPolicy}),
					send(step{"any-proto allow alone", Ingress, udp(pod3IP, 40000, podIP, 54).bytes(), ReasonAllowedPolicy}),
				}
			},
		},
		"anti-spoofing": {
			steps: func(*Policy) []action {
				return []action{
					send(step{"foreign source", Egress, syn("10.244.9.9", 40000, pod2IP, 80).bytes(), ReasonDropSpoofed}),
					send(step{"source of another pod", Egress, udp(pod2IP, 40000, pod3IP, 53).bytes(), ReasonDropSpoofed}),
					send(step{"own source", Egress, syn(podIP, 40000, pod2IP, 80).bytes(), ReasonAllowedUnenforced}),
					send(step{"ARP with foreign sender", Egress, arpFrame("10.244.2.2"), ReasonDropSpoofed}),
					send(step{"ARP with own sender", Egress, arpFrame(podIP), ReasonPassARP}),
					send(step{"ARP probe", Egress, arpFrame("0.0.0.0"), ReasonPassARP}),
					send(step{"sources into the pod are not checked", Ingress, syn(worldIP, 40000, podIP, 80).bytes(), ReasonAllowedUnenforced}),
				}
			},
		},
		"conntrack: replies of allowed flows pass": {
			flags: EnforceIngress | EnforceEgress,
			setup: func(t *testing.T, p *Policy) {
				allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 80, Proto: ProtoTCP, Dir: Egress})(t)
				allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 53, Proto: ProtoUDP, Dir: Egress})(t)
				allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 0, Proto: ProtoICMP, Dir: Egress})(t)
			},
			steps: func(*Policy) []action {
				return []action{
					send(step{"SYN out", Egress, syn(podIP, 40000, pod2IP, 80).bytes(), ReasonAllowedPolicy}),
					send(step{"SYN-ACK in", Ingress, tcp(pod2IP, 80, podIP, 40000, tcpSYN|tcpACK).bytes(), ReasonCTEstablished}),
					send(step{"ACK out", Egress, tcp(podIP, 40000, pod2IP, 80, tcpACK).bytes(), ReasonCTEstablished}),
					send(step{"data in", Ingress, tcp(pod2IP, 80, podIP, 40000, tcpACK).bytes(), ReasonCTEstablished}),
					send(step{"same peer, other client port", Ingress, tcp(pod2IP, 80, podIP, 40001, tcpACK).bytes(), ReasonDeniedDefault}),
					send(step{"SYN from the peer is a new flow", Ingress, syn(pod2IP, 80, podIP, 40000).bytes(), ReasonDeniedDefault}),
					send(step{"other peer, same ports", Ingress, tcp(pod3IP, 80, podIP, 40000, tcpACK).bytes(), ReasonDeniedDefault}),
					send(step{"UDP query out", Egress, udp(podIP, 50000, pod2IP, 53).bytes(), ReasonAllowedPolicy}),
					send(step{"UDP answer in", Ingress, udp(pod2IP, 53, podIP, 50000).bytes(), ReasonCTEstablished}),
					send(step{"UDP from the peer to another port", Ingress, udp(pod2IP, 53, podIP, 50001).bytes(), ReasonDeniedDefault}),
					send(step{"echo request out", Egress, icmp(podIP, pod2IP, 8, 7).bytes(), ReasonAllowedPolicy}),
					send(step{"echo reply in", Ingress, icmp(pod2IP, podIP, 0, 7).bytes(), ReasonCTEstablished}),
					send(step{"echo request in", Ingress, icmp(pod2IP, podIP, 8, 9).bytes(), ReasonDeniedDefault}),
				}
			},
		},
		"conntrack: policy revision re-checks established flows": {
			flags: EnforceIngress | EnforceEgress,
			setup: func(t *testing.T, p *Policy) {
				allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 80, Proto: ProtoTCP, Dir: Egress})(t)
			},
			steps: func(p *Policy) []action {
				key := PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 80, Proto: ProtoTCP, Dir: Egress}
				revoke := func(t *testing.T) {
					if err := p.DeletePolicy(key); err != nil {
						t.Fatal(err)
					}
				}
				return []action{
					send(step{"SYN out", Egress, syn(podIP, 40000, pod2IP, 80).bytes(), ReasonAllowedPolicy}),
					{revoke, step{"allow removed, same revision: flow continues", Egress, tcp(podIP, 40000, pod2IP, 80, tcpACK).bytes(), ReasonCTEstablished}},
					send(step{"a SYN on the same tuple is decided again", Egress, syn(podIP, 40000, pod2IP, 80).bytes(), ReasonDeniedDefault}),
					{func(t *testing.T) { mustPutEndpoint(t, p, EnforceIngress|EnforceEgress, 1) },
						step{"revision bumped: the flow is denied", Egress, tcp(podIP, 40000, pod2IP, 80, tcpACK).bytes(), ReasonDeniedDefault}},
					send(step{"and its entry is gone", Ingress, tcp(pod2IP, 80, podIP, 40000, tcpACK).bytes(), ReasonDeniedDefault}),
					{allow(p, key), step{"allowed again", Egress, tcp(podIP, 40000, pod2IP, 80, tcpACK).bytes(), ReasonAllowedPolicy}},
					{func(t *testing.T) { mustPutEndpoint(t, p, EnforceIngress|EnforceEgress, 2) },
						step{"revision bumped, still allowed: reply passes", Ingress, tcp(pod2IP, 80, podIP, 40000, tcpACK).bytes(), ReasonCTEstablished}},
				}
			},
		},
		"any port and any protocol": {
			flags: EnforceIngress,
			setup: func(t *testing.T, p *Policy) {
				allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 0, Proto: ProtoUDP, Dir: Ingress})(t)
				allow(p, PolicyKey{Endpoint: podID, Peer: pod3ID, Port: 0, Proto: ProtoAny, Dir: Ingress})(t)
				allow(p, PolicyKey{Endpoint: podID, Peer: IdentityAny, Port: 443, Proto: ProtoTCP, Dir: Ingress})(t)
			},
			steps: func(*Policy) []action {
				return []action{
					send(step{"UDP any port: 5353", Ingress, udp(pod2IP, 40000, podIP, 5353).bytes(), ReasonAllowedPolicy}),
					send(step{"UDP any port: 9999", Ingress, udp(pod2IP, 40000, podIP, 9999).bytes(), ReasonAllowedPolicy}),
					send(step{"UDP any port does not allow TCP", Ingress, syn(pod2IP, 40000, podIP, 5353).bytes(), ReasonDeniedDefault}),
					send(step{"any protocol: TCP", Ingress, syn(pod3IP, 40000, podIP, 22).bytes(), ReasonAllowedPolicy}),
					send(step{"any protocol: ICMP", Ingress, icmp(pod3IP, podIP, 8, 1).bytes(), ReasonAllowedPolicy}),
					send(step{"any peer, port 443", Ingress, syn(worldIP, 40000, podIP, 443).bytes(), ReasonAllowedPolicy}),
					send(step{"any peer, port 444", Ingress, syn(worldIP, 40000, podIP, 444).bytes(), ReasonDeniedDefault}),
				}
			},
		},
		"default deny only when the endpoint is selected": {
			steps: func(p *Policy) []action {
				return []action{
					send(step{"not selected: ingress passes", Ingress, syn(pod3IP, 40000, podIP, 8080).bytes(), ReasonAllowedUnenforced}),
					send(step{"not selected: egress passes", Egress, syn(podIP, 40000, pod3IP, 8080).bytes(), ReasonAllowedUnenforced}),
					{func(t *testing.T) { mustPutEndpoint(t, p, EnforceIngress, 0) },
						step{"selected for ingress: ingress denied", Ingress, syn(pod3IP, 40001, podIP, 8080).bytes(), ReasonDeniedDefault}},
					send(step{"selected for ingress: egress passes", Egress, syn(podIP, 40001, pod3IP, 8080).bytes(), ReasonAllowedUnenforced}),
					{func(t *testing.T) { mustPutEndpoint(t, p, EnforceIngress|EnforceEgress, 0) },
						step{"selected for both: egress denied", Egress, syn(podIP, 40002, pod3IP, 8080).bytes(), ReasonDeniedDefault}},
				}
			},
		},
		"unknown sources are WORLD": {
			flags: EnforceIngress,
			setup: func(t *testing.T, p *Policy) {
				allow(p, PolicyKey{Endpoint: podID, Peer: IdentityWorld, Port: 80, Proto: ProtoTCP, Dir: Ingress})(t)
			},
			steps: func(*Policy) []action {
				return []action{
					send(step{"unknown address", Ingress, syn(worldIP, 40000, podIP, 80).bytes(), ReasonAllowedPolicy}),
					send(step{"known pod is not WORLD", Ingress, syn(pod2IP, 40000, podIP, 80).bytes(), ReasonDeniedDefault}),
				}
			},
		},
		"CIDR identities: longest prefix wins": {
			flags: EnforceIngress,
			setup: func(t *testing.T, p *Policy) {
				// ipBlock 192.0.2.0/24 except 192.0.2.128/25
				if err := p.PutIdentity(netip.MustParsePrefix("192.0.2.0/24"), 5000); err != nil {
					t.Fatal(err)
				}
				if err := p.PutIdentity(netip.MustParsePrefix("192.0.2.128/25"), IdentityWorld); err != nil {
					t.Fatal(err)
				}
				allow(p, PolicyKey{Endpoint: podID, Peer: 5000, Port: 80, Proto: ProtoTCP, Dir: Ingress})(t)
			},
			steps: func(*Policy) []action {
				return []action{
					send(step{"in the block", Ingress, syn("192.0.2.7", 40000, podIP, 80).bytes(), ReasonAllowedPolicy}),
					send(step{"in the except", Ingress, syn("192.0.2.200", 40000, podIP, 80).bytes(), ReasonDeniedDefault}),
				}
			},
		},
		"host identity is policed like any other": {
			flags: EnforceIngress,
			steps: func(p *Policy) []action {
				return []action{
					send(step{"host without an entry", Ingress, syn(nodeIP, 40000, podIP, 8080).bytes(), ReasonDeniedDefault}),
					{allow(p, PolicyKey{Endpoint: podID, Peer: IdentityHost, Dir: Ingress}),
						step{"host allowed", Ingress, syn(nodeIP, 40000, podIP, 8080).bytes(), ReasonAllowedPolicy}},
				}
			},
		},
		// Only IPv4 is policed, so only IPv4 (and ARP, checked) passes:
		// IPv6 and whatever hides behind another ethertype or a VLAN tag
		// is dropped both ways, whether or not a policy isolates the pod,
		// whatever the policy allows.
		"fail closed: IPv6, VLAN tags, other ethertypes": {
			setup: func(t *testing.T, p *Policy) {
				allow(p, PolicyKey{Endpoint: podID, Peer: IdentityAny, Dir: Ingress})(t)
				allow(p, PolicyKey{Endpoint: podID, Peer: IdentityAny, Dir: Egress})(t)
			},
			steps: func(p *Policy) []action {
				arpShort := arpFrame(podIP)[:14+20]
				arpNotEther := arpFrame(podIP)
				arpNotEther[14+1] = 6 // hardware type 6 (IEEE 802)
				return []action{
					send(step{"IPv6 link-local TCP into the pod", Ingress, ipv6Frame("fe80::1", "fe80::2", ProtoTCP), ReasonDropIPv6}),
					send(step{"IPv6 link-local TCP from the pod", Egress, ipv6Frame("fe80::2", "fe80::1", ProtoTCP), ReasonDropIPv6}),
					send(step{"IPv6 global TCP into the pod", Ingress, ipv6Frame("fd00:77::1", "fd00:77::2", ProtoTCP), ReasonDropIPv6}),
					send(step{"IPv6 global TCP from the pod", Egress, ipv6Frame("fd00:77::2", "2001:db8::1", ProtoTCP), ReasonDropIPv6}),
					send(step{"neighbour solicitation from the pod", Egress, ipv6Frame("fe80::2", "ff02::1:ff00:1", 58), ReasonDropIPv6}),
					send(step{"IPv6 with no next header", Egress, ipv6Frame("::", "ff02::16", 59), ReasonDropIPv6}),
					{func(t *testing.T) { mustPutEndpoint(t, p, EnforceIngress|EnforceEgress, 0) },
						step{"IPv6 into an isolated pod", Ingress, ipv6Frame("fe80::1", "fe80::2", ProtoTCP), ReasonDropIPv6}},
					send(step{"IPv6 from an isolated pod", Egress, ipv6Frame("fe80::2", "fe80::1", ProtoTCP), ReasonDropIPv6}),
					send(step{"IPv4 still policed (allowed)", Egress, syn(podIP, 40000, pod2IP, 80).bytes(), ReasonAllowedPolicy}),
					send(step{"802.1Q-tagged IPv4 from the pod", Egress, vlanTagged(syn(podIP, 40001, pod2IP, 80).bytes(), 0x8100), ReasonDropEthertype}),
					send(step{"802.1Q-tagged spoofed IPv4 from the pod", Egress, vlanTagged(udp(pod3IP, 40000, nodeIP, 53).bytes(), 0x8100), ReasonDropEthertype}),
					send(step{"double-tagged (802.1ad, 802.1Q) IPv4 from the pod", Egress, vlanTagged(syn(podIP, 40002, pod2IP, 80).bytes(), 0x88a8, 0x8100), ReasonDropEthertype}),
					send(step{"802.1Q-tagged IPv4 into the pod", Ingress, vlanTagged(syn(pod2IP, 40000, podIP, 80).bytes(), 0x8100), ReasonDropEthertype}),
					send(step{"802.1Q-tagged IPv6 from the pod", Egress, vlanTagged(ipv6Frame("fe80::2", "fe80::1", ProtoTCP), 0x8100), ReasonDropEthertype}),
					send(step{"LLDP from the pod", Egress, withEthertype(arpFrame(podIP), 0x88cc), ReasonDropEthertype}),
					send(step{"PPPoE session from the pod", Egress, withEthertype(syn(podIP, 40003, pod2IP, 80).bytes(), 0x8864), ReasonDropEthertype}),
					send(step{"802.3 length field from the pod", Egress, withEthertype(syn(podIP, 40004, pod2IP, 80).bytes(), 0x0040), ReasonDropEthertype}),
					send(step{"MPLS into the pod", Ingress, withEthertype(syn(pod2IP, 40000, podIP, 80).bytes(), 0x8847), ReasonDropEthertype}),
					send(step{"truncated ARP from the pod", Egress, arpShort, ReasonDropMalformed}),
					send(step{"non-Ethernet ARP from the pod", Egress, arpNotEther, ReasonDropMalformed}),
					send(step{"ARP into the pod", Ingress, arpFrame(nodeIP), ReasonPassARP}),
				}
			},
		},
		"parsing": {
			flags: EnforceIngress,
			setup: func(t *testing.T, p *Policy) {
				allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 8080, Proto: ProtoTCP, Dir: Ingress})(t)
				allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 9000, Proto: ProtoSCTP, Dir: Ingress})(t)
			},
			steps: func(*Policy) []action {
				withOptions := syn(pod2IP, 40000, podIP, 8080)
				withOptions.ipOptions = 2
				frag := udp(pod3IP, 40000, podIP, 53)
				frag.fragOffset = 185
				unreach := icmp(pod3IP, podIP, 3, 0)
				shortTCP := syn(pod2IP, 40000, podIP, 8080)
				shortTCP.truncate = 7 + 8 // payload and 8 bytes of the TCP header
				sctp := udp(pod2IP, 40000, podIP, 9000)
				sctp.proto = ProtoSCTP
				// BPF_PROG_TEST_RUN refuses frames too short for the IPv4
				// header, so malformed headers are crafted instead.
				badIHL := syn(pod2IP, 40000, podIP, 8080).bytes()
				badIHL[14] = 4<<4 | 4
				badVersion := syn(pod2IP, 40000, podIP, 8080).bytes()
				badVersion[14] = 6<<4 | 5
				return []action{
					send(step{"IP options move the ports", Ingress, withOptions.bytes(), ReasonAllowedPolicy}),
					send(step{"SCTP ports", Ingress, sctp.bytes(), ReasonAllowedPolicy}),
					send(step{"non-first fragment", Ingress, frag.bytes(), ReasonPassFragment}),
					send(step{"ICMP error", Ingress, unreach.bytes(), ReasonPassICMPError}),
					send(step{"truncated TCP header", Ingress, shortTCP.bytes(), ReasonDropMalformed}),
					send(step{"IPv4 header length below 5 words", Ingress, badIHL, ReasonDropMalformed}),
					send(step{"not version 4", Ingress, badVersion, ReasonDropMalformed}),
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := loadTestPolicy(t, tc.flags)
			if tc.setup != nil {
				tc.setup(t, p)
			}
			for _, a := range tc.steps(p) {
				if a.do != nil {
					a.do(t)
				}
				runStep(t, p, a.step)
			}
		})
	}
}

func TestPolicyNoEndpoint(t *testing.T) {
	p := loadTestPolicy(t, 0)
	if err := p.DeleteEndpoint(testIfindex); err != nil {
		t.Fatal(err)
	}
	runStep(t, p, step{"IPv4 on an interface without endpoint", Egress, syn(podIP, 40000, pod2IP, 80).bytes(), ReasonDropNoEndpoint})
	runStep(t, p, step{"ARP still passes", Egress, arpFrame(podIP), ReasonPassARP})
	runStep(t, p, step{"IPv6 is dropped before the endpoint lookup", Ingress, ipv6Frame("fe80::1", "fe80::2", ProtoTCP), ReasonDropIPv6})
	if err := p.DeleteEndpoint(testIfindex); err != nil {
		t.Fatalf("deleting a missing endpoint: %v", err)
	}
}

func TestPolicyCounters(t *testing.T) {
	p := loadTestPolicy(t, EnforceIngress)
	allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 8080, Proto: ProtoTCP, Dir: Ingress})(t)
	opening := syn(pod2IP, 40000, podIP, 8080).bytes()
	data := tcp(pod2IP, 40000, podIP, 8080, tcpACK).bytes()
	denied := syn(pod3IP, 40000, podIP, 8080).bytes()
	for _, f := range [][]byte{opening, denied, data, denied, data, denied} {
		if _, err := p.Program(Ingress).Run(&ebpf.RunOptions{Data: f}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	want := map[Reason]Count{
		ReasonAllowedPolicy: {1, uint64(len(opening))},
		ReasonCTEstablished: {2, 2 * uint64(len(data))},
		ReasonDeniedDefault: {3, 3 * uint64(len(denied))},
	}
	for r := range NumReasons {
		if got := c[Ingress][r]; got != want[r] {
			t.Errorf("ingress %s = %+v, want %+v", r, got, want[r])
		}
		if got := c[Egress][r]; got != (Count{}) {
			t.Errorf("egress %s = %+v, want zero", r, got)
		}
	}
}

func TestFlushConntrack(t *testing.T) {
	p := loadTestPolicy(t, EnforceIngress|EnforceEgress)
	allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 8080, Proto: ProtoTCP, Dir: Ingress})(t)
	runStep(t, p, step{"SYN in", Ingress, syn(pod2IP, 40000, podIP, 8080).bytes(), ReasonAllowedPolicy})
	runStep(t, p, step{"reply out", Egress, tcp(podIP, 8080, pod2IP, 40000, tcpSYN|tcpACK).bytes(), ReasonCTEstablished})

	other := ctKey{Ifindex: 99, Local: ip4("10.244.9.2"), Remote: ip4(pod2IP), LocalPort: 1, RemotePort: 2, Proto: ProtoTCP}
	if err := p.objs.NmCt.Put(&other, &ctEntry{Expires: ^uint64(0)}); err != nil {
		t.Fatal(err)
	}
	n, err := p.FlushConntrack(testIfindex)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("flushed %d entries, want 1", n)
	}
	var e ctEntry
	if err := p.objs.NmCt.Lookup(&other, &e); err != nil {
		t.Errorf("entry of another interface: %v", err)
	}
	// The reply now comes without a flow and is decided as a new egress flow.
	runStep(t, p, step{"reply after flush", Egress, tcp(podIP, 8080, pod2IP, 40000, tcpACK).bytes(), ReasonDeniedDefault})
}

// ctEntryOf returns the conntrack entry of the test endpoint for a flow, seen
// from the pod (local) side.
func ctEntryOf(t *testing.T, p *Policy, local string, lport uint16, remote string, rport uint16, proto uint8) (ctEntry, bool) {
	t.Helper()
	k := ctKey{Ifindex: testIfindex, Local: ip4(local), Remote: ip4(remote), LocalPort: lport, RemotePort: rport, Proto: proto}
	var e ctEntry
	if err := p.objs.NmCt.Lookup(&k, &e); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return ctEntry{}, false
		}
		t.Fatal(err)
	}
	return e, true
}

// The revocation cases: a flow whose allow is removed must not be carried on
// by packets of the side that is not isolated (the server's ACKs and
// replies), whichever side sends first after the change.
func TestPolicyRevocation(t *testing.T) {
	// The server is the endpoint under test (podIP:8080), isolated for
	// ingress only; the client is pod2.
	inKey := PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 8080, Proto: ProtoTCP, Dir: Ingress}
	udpKey := PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 53, Proto: ProtoUDP, Dir: Ingress}
	var (
		clientData = tcp(pod2IP, 40000, podIP, 8080, tcpACK).bytes()
		serverData = tcp(podIP, 8080, pod2IP, 40000, tcpACK).bytes()
		query      = udp(pod2IP, 50000, podIP, 53).bytes()
		answer     = udp(podIP, 53, pod2IP, 50000).bytes()
	)
	revoke := func(p *Policy, k PolicyKey, rev uint32) func(*testing.T) {
		return func(t *testing.T) {
			if err := p.DeletePolicy(k); err != nil {
				t.Fatal(err)
			}
			mustPutEndpoint(t, p, EnforceIngress, rev)
		}
	}
	open := func(p *Policy) []action {
		return []action{
			{step: step{"SYN in", Ingress, syn(pod2IP, 40000, podIP, 8080).bytes(), ReasonAllowedPolicy}},
			{step: step{"SYN-ACK out", Egress, tcp(podIP, 8080, pod2IP, 40000, tcpSYN|tcpACK).bytes(), ReasonCTEstablished}},
			{step: step{"client data in", Ingress, clientData, ReasonCTEstablished}},
			{step: step{"server data out", Egress, serverData, ReasonCTEstablished}},
		}
	}
	tests := map[string]struct {
		setup func(t *testing.T, p *Policy)
		steps func(p *Policy) []action
	}{
		"TCP, the client's packet first after the bump": {
			steps: func(p *Policy) []action {
				return append(open(p),
					action{revoke(p, inKey, 1), step{"client data in: revoked", Ingress, clientData, ReasonDeniedDefault}},
					action{step: step{"server ACK out: decided as a packet of the server's", Egress, serverData, ReasonAllowedUnenforced}},
					action{step: step{"client data in: not re-admitted by the server's ACK", Ingress, clientData, ReasonDeniedDefault}},
					action{step: step{"server data out again", Egress, serverData, ReasonAllowedUnenforced}},
					action{step: step{"client data in: still revoked", Ingress, clientData, ReasonDeniedDefault}},
					action{step: step{"a SYN on the same tuple is decided again", Ingress, syn(pod2IP, 40000, podIP, 8080).bytes(), ReasonDeniedDefault}},
				)
			},
		},
		"TCP, the server's packet first after the bump": {
			steps: func(p *Policy) []action {
				return append(open(p),
					action{revoke(p, inKey, 1), step{"server ACK out: origin re-decided, revoked", Egress, serverData, ReasonAllowedUnenforced}},
					action{step: step{"client data in: revoked", Ingress, clientData, ReasonDeniedDefault}},
					action{step: step{"server data out", Egress, serverData, ReasonAllowedUnenforced}},
					action{step: step{"client data in: still revoked", Ingress, clientData, ReasonDeniedDefault}},
				)
			},
		},
		"TCP, allowed again without a bump: the tombstone revives": {
			steps: func(p *Policy) []action {
				return append(open(p),
					action{revoke(p, inKey, 1), step{"client data in: revoked", Ingress, clientData, ReasonDeniedDefault}},
					action{step: step{"server ACK out", Egress, serverData, ReasonAllowedUnenforced}},
					action{allow(p, inKey), step{"client data in: allowed again", Ingress, clientData, ReasonAllowedPolicy}},
					action{step: step{"server data out: carried again", Egress, serverData, ReasonCTEstablished}},
					action{step: step{"client data in: carried again", Ingress, clientData, ReasonCTEstablished}},
				)
			},
		},
		"TCP, revision bumped while still allowed: nothing changes": {
			steps: func(p *Policy) []action {
				return append(open(p),
					action{func(t *testing.T) { mustPutEndpoint(t, p, EnforceIngress, 1) },
						step{"server data out: origin re-decided, allowed", Egress, serverData, ReasonCTEstablished}},
					action{step: step{"client data in", Ingress, clientData, ReasonCTEstablished}},
				)
			},
		},
		"TCP, entries flushed: the server's ACK does not re-open the client's flow": {
			steps: func(p *Policy) []action {
				flush := func(t *testing.T) {
					if err := p.DeletePolicy(inKey); err != nil {
						t.Fatal(err)
					}
					if _, err := p.FlushConntrack(testIfindex); err != nil {
						t.Fatal(err)
					}
				}
				return append(open(p),
					action{flush, step{"server ACK out: mid-stream, its own direction only", Egress, serverData, ReasonAllowedUnenforced}},
					action{step: step{"client data in: not a reply", Ingress, clientData, ReasonDeniedDefault}},
					action{step: step{"server data out: carried one way", Egress, serverData, ReasonCTEstablished}},
					action{step: step{"client data in: still denied", Ingress, clientData, ReasonDeniedDefault}},
				)
			},
		},
		"UDP, the server's answer first after the bump": {
			setup: func(t *testing.T, p *Policy) { allow(p, udpKey)(t) },
			steps: func(p *Policy) []action {
				return []action{
					{step: step{"query in", Ingress, query, ReasonAllowedPolicy}},
					{step: step{"answer out", Egress, answer, ReasonCTEstablished}},
					{revoke(p, udpKey, 1), step{"answer out: origin re-decided, revoked", Egress, answer, ReasonAllowedUnenforced}},
					{step: step{"query in: not re-admitted by the answer", Ingress, query, ReasonDeniedDefault}},
					{step: step{"answer out again", Egress, answer, ReasonAllowedUnenforced}},
					{step: step{"query in: still revoked", Ingress, query, ReasonDeniedDefault}},
				}
			},
		},
		"UDP, the client's query first after the bump": {
			setup: func(t *testing.T, p *Policy) { allow(p, udpKey)(t) },
			steps: func(p *Policy) []action {
				return []action{
					{step: step{"query in", Ingress, query, ReasonAllowedPolicy}},
					{revoke(p, udpKey, 1), step{"query in: revoked", Ingress, query, ReasonDeniedDefault}},
					{step: step{"answer out", Egress, answer, ReasonAllowedUnenforced}},
					{step: step{"query in: not re-admitted by the answer", Ingress, query, ReasonDeniedDefault}},
				}
			},
		},
		"UDP, the first packet opens the flow": {
			steps: func(p *Policy) []action {
				return []action{
					{step: step{"server sends first (not isolated for egress)", Egress, answer, ReasonAllowedUnenforced}},
					{step: step{"the peer's packets are its replies", Ingress, query, ReasonCTEstablished}},
				}
			},
		},
		"TCP picked up mid-stream (flow older than the entry)": {
			setup: func(t *testing.T, p *Policy) {
				allow(p, inKey)(t)
				mustPutEndpoint(t, p, EnforceIngress|EnforceEgress, 0)
			},
			steps: func(p *Policy) []action {
				return []action{
					{step: step{"client data in: allowed, entry for ingress only", Ingress, clientData, ReasonAllowedPolicy}},
					{step: step{"client data in: carried", Ingress, clientData, ReasonCTEstablished}},
					{step: step{"server data out: origin unknown, egress isolated", Egress, serverData, ReasonDeniedDefault}},
					{func(t *testing.T) { mustPutEndpoint(t, p, EnforceIngress, 1) },
						step{"server data out: egress no longer isolated", Egress, serverData, ReasonAllowedUnenforced}},
					{step: step{"server data out: carried", Egress, serverData, ReasonCTEstablished}},
					{step: step{"client data in: decided again after the bump", Ingress, clientData, ReasonAllowedPolicy}},
					{revoke(p, inKey, 2), step{"client data in: revoked", Ingress, clientData, ReasonDeniedDefault}},
					{step: step{"server data out", Egress, serverData, ReasonAllowedUnenforced}},
					{step: step{"client data in: still denied", Ingress, clientData, ReasonDeniedDefault}},
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := loadTestPolicy(t, EnforceIngress)
			allow(p, inKey)(t)
			if tc.setup != nil {
				tc.setup(t, p)
			}
			for _, a := range tc.steps(p) {
				if a.do != nil {
					a.do(t)
				}
				runStep(t, p, a.step)
			}
		})
	}

	t.Run("entries", func(t *testing.T) {
		p := loadTestPolicy(t, EnforceIngress)
		allow(p, inKey)(t)
		for _, a := range open(p) {
			runStep(t, p, a.step)
		}
		if e, ok := ctEntryOf(t, p, podIP, 8080, pod2IP, 40000, ProtoTCP); !ok || e.Origin != Ingress || e.Flags != 0 {
			t.Errorf("opened flow: entry %+v (found %v), want origin ingress, no flags", e, ok)
		}
		revoke(p, inKey, 1)(t)
		runStep(t, p, step{"client data in", Ingress, clientData, ReasonDeniedDefault})
		if e, ok := ctEntryOf(t, p, podIP, 8080, pod2IP, 40000, ProtoTCP); !ok || e.Origin != Ingress || e.Flags != ctRevoked || e.PolicyRevision != 1 {
			t.Errorf("revoked flow: entry %+v (found %v), want a revoked tombstone of origin ingress at revision 1", e, ok)
		}
		runStep(t, p, step{"server data out, own port", Egress, tcp(podIP, 8081, pod2IP, 40001, tcpACK).bytes(), ReasonAllowedUnenforced})
		if e, ok := ctEntryOf(t, p, podIP, 8081, pod2IP, 40001, ProtoTCP); !ok || e.Origin != Egress || e.Flags != ctMidstream|ctOKEgress {
			t.Errorf("mid-stream flow: entry %+v (found %v), want origin egress, mid-stream, egress allowed", e, ok)
		}
		runStep(t, p, step{"client data in, other flow", Ingress, tcp(pod2IP, 40001, podIP, 8081, tcpACK).bytes(), ReasonDeniedDefault})
		if e, _ := ctEntryOf(t, p, podIP, 8081, pod2IP, 40001, ProtoTCP); e.Flags&ctOKIngress != 0 {
			t.Errorf("mid-stream flow: entry %+v carries a denied direction", e)
		}
	})
}

// An agent restart reloads the objects over the pinned maps: established
// flows keep passing both ways, and a revoked flow stays revoked.
func TestPolicyConntrackSurvivesReload(t *testing.T) {
	requireBPF(t)
	pins := filepath.Join(privateBPFFS(t), "maps")
	inKey := PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 8080, Proto: ProtoTCP, Dir: Ingress}
	load := func() *Policy {
		p, err := LoadPolicy(LoadOptions{PinPath: pins})
		if err != nil {
			t.Fatalf("LoadPolicy: %v", err)
		}
		return p
	}
	p := load()
	mustPutEndpoint(t, p, EnforceIngress|EnforceEgress, 0)
	if err := p.PutIdentity(netip.PrefixFrom(netip.MustParseAddr(pod2IP), 32), pod2ID); err != nil {
		t.Fatal(err)
	}
	allow(p, inKey)(t)
	allow(p, PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 9090, Proto: ProtoTCP, Dir: Ingress})(t)
	runStep(t, p, step{"SYN in", Ingress, syn(pod2IP, 40000, podIP, 8080).bytes(), ReasonAllowedPolicy})
	runStep(t, p, step{"other SYN in", Ingress, syn(pod2IP, 40001, podIP, 9090).bytes(), ReasonAllowedPolicy})
	// Revoked before the restart, the endpoint only isolated for ingress.
	if err := p.DeletePolicy(PolicyKey{Endpoint: podID, Peer: pod2ID, Port: 9090, Proto: ProtoTCP, Dir: Ingress}); err != nil {
		t.Fatal(err)
	}
	mustPutEndpoint(t, p, EnforceIngress, 1)
	runStep(t, p, step{"other data in: revoked", Ingress, tcp(pod2IP, 40001, podIP, 9090, tcpACK).bytes(), ReasonDeniedDefault})
	p.Close()

	p = load()
	defer p.Close()
	runStep(t, p, step{"reply out after the reload", Egress, tcp(podIP, 8080, pod2IP, 40000, tcpSYN|tcpACK).bytes(), ReasonCTEstablished})
	runStep(t, p, step{"data in after the reload", Ingress, tcp(pod2IP, 40000, podIP, 8080, tcpACK).bytes(), ReasonCTEstablished})
	runStep(t, p, step{"revoked flow: server ACK out", Egress, tcp(podIP, 9090, pod2IP, 40001, tcpACK).bytes(), ReasonAllowedUnenforced})
	runStep(t, p, step{"revoked flow: client data in, still revoked", Ingress, tcp(pod2IP, 40001, podIP, 9090, tcpACK).bytes(), ReasonDeniedDefault})
	// The agent bumps the revision as it starts: the allowed flow stays.
	mustPutEndpoint(t, p, EnforceIngress, 2)
	runStep(t, p, step{"reply out after a bump", Egress, tcp(podIP, 8080, pod2IP, 40000, tcpACK).bytes(), ReasonCTEstablished})
}
