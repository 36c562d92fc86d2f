//go:build linux

package bpf

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// csum16 is the Internet checksum of b (with sum as a start).
func csum16(sum uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// l4CsumOff is the offset of the L4 checksum in an IPv4 packet of proto
// from the L4 header.
func l4CsumOff(proto uint8) int {
	switch proto {
	case ProtoTCP:
		return 16
	case ProtoUDP:
		return 6
	}
	return 2
}

// withChecksums fills in the IP and L4 checksums of an Ethernet/IPv4 frame
// (zeroUDP: leave the UDP checksum 0, "none").
func withChecksums(f []byte, zeroUDP bool) []byte {
	ip := f[14:]
	ihl := int(ip[0]&0xf) * 4
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], csum16(0, ip[:ihl]))
	l4 := ip[ihl:]
	off := l4CsumOff(ip[9])
	l4[off], l4[off+1] = 0, 0
	if ip[9] == ProtoUDP && zeroUDP {
		return f
	}
	binary.BigEndian.PutUint16(l4[off:], l4Sum(ip, l4))
	return f
}

func l4Sum(ip, l4 []byte) uint16 {
	var sum uint32
	if ip[9] != ProtoICMP {
		for i := 12; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		sum += uint32(ip[9]) + uint32(len(l4))
	}
	return csum16(sum, l4)
}

// checkChecksums fails unless the frame's IP and L4 checksums verify.
func checkChecksums(t *testing.T, what string, f []byte, zeroUDP bool) {
	t.Helper()
	ip := f[14:]
	ihl := int(ip[0]&0xf) * 4
	if csum16(0, ip[:ihl]) != 0 {
		t.Errorf("%s: bad IP checksum", what)
	}
	l4 := ip[ihl:]
	if ip[9] == ProtoUDP && zeroUDP {
		if got := binary.BigEndian.Uint16(l4[6:]); got != 0 {
			t.Errorf("%s: UDP checksum 0 became %#x", what, got)
		}
		return
	}
	if l4Sum(ip, l4) != 0 {
		t.Errorf("%s: bad L4 checksum", what)
	}
}

// TestMasqChecksums: masq_out rewrites a pod's packet to the uplink's
// address and a NAT port with checksums that verify from scratch (TCP,
// UDP, UDP without checksum, ICMP echo), and masq_in restores the reply;
// a reply with another remote port is left alone.
func TestMasqChecksums(t *testing.T) {
	requireBPF(t)
	m, err := LoadMasq(LoadOptions{}, MasqLifetimes{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	nat := netip.MustParseAddr("192.168.0.1")
	if err := m.SetConfig(netip.MustParsePrefix("10.244.1.0/24"), PortRange{Min: 61000, Max: 65535}); err != nil {
		t.Fatal(err)
	}
	// BPF_PROG_TEST_RUN runs on the loopback device, ifindex 1.
	if err := m.SetAddresses(map[int]netip.Addr{1: nat}); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		out     pkt
		zeroUDP bool
	}{
		"TCP":               {out: syn("10.244.1.5", 40000, "203.0.113.7", 443)},
		"UDP":               {out: udp("10.244.1.5", 40001, "203.0.113.7", 53)},
		"UDP zero checksum": {out: udp("10.244.1.5", 40002, "203.0.113.7", 53), zeroUDP: true},
		"ICMP echo":         {out: icmp("10.244.1.5", "203.0.113.7", 8, 777)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := withChecksums(tc.out.bytes(), tc.zeroUDP)
			ret, out, err := m.objs.MasqOut.Test(f)
			if err != nil || ret != actPass {
				t.Fatalf("masq_out: %d %v", ret, err)
			}
			ip := out[14:]
			if got := netip.AddrFrom4([4]byte(ip[12:16])); got != nat {
				t.Fatalf("source %s, want %s", got, nat)
			}
			portOff := 20
			if tc.out.proto == ProtoICMP {
				portOff = 24
			}
			natPort := binary.BigEndian.Uint16(ip[portOff:])
			if natPort < 61000 {
				t.Errorf("NAT port %d outside 61000-65535", natPort)
			}
			checkChecksums(t, "masq_out", out, tc.zeroUDP)

			reply := tc.out
			reply.src, reply.dst = tc.out.dst, nat.String()
			if tc.out.proto == ProtoICMP {
				reply.icmpType, reply.sport = 0, natPort
			} else {
				reply.sport, reply.dport = tc.out.dport, natPort
				reply.tcpFlags = tcpSYN | tcpACK
			}
			ret, back, err := m.objs.MasqIn.Test(withChecksums(reply.bytes(), tc.zeroUDP))
			if err != nil || ret != actPass {
				t.Fatalf("masq_in: %d %v", ret, err)
			}
			bip := back[14:]
			if got := netip.AddrFrom4([4]byte(bip[16:20])); got.String() != tc.out.src {
				t.Errorf("reply to %s, want the pod %s", got, tc.out.src)
			}
			wantPort, off := tc.out.sport, 22
			if tc.out.proto == ProtoICMP {
				off = 24
			}
			if got := binary.BigEndian.Uint16(bip[off:]); got != wantPort {
				t.Errorf("reply to port %d, want %d", got, wantPort)
			}
			checkChecksums(t, "masq_in", back, tc.zeroUDP)

			if tc.out.proto != ProtoICMP {
				forged := reply
				forged.sport++
				ret, fb, err := m.objs.MasqIn.Test(withChecksums(forged.bytes(), tc.zeroUDP))
				if err != nil || ret != actPass || netip.AddrFrom4([4]byte(fb[30:34])) != nat {
					t.Errorf("a reply from another remote port was translated: %d %v", ret, err)
				}
			}
		})
	}
}
