//go:build linux

package bpf

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// requireBPF skips the test unless the process may load BPF programs.
func requireBPF(tb testing.TB) {
	tb.Helper()
	skip := tb.Skipf
	if os.Getenv("NODEMESH_DATAPATH") == "required" { // make test-datapath
		skip = tb.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("skipped: needs root (CAP_BPF and CAP_NET_ADMIN) to load BPF programs; run `sudo go test ./bpf/`")
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if errors.Is(err, unix.EPERM) || errors.Is(err, ebpf.ErrNotSupported) {
		skip("skipped: cannot create a BPF map as root (%v): needs CAP_BPF and a kernel with BPF", err)
	}
	if err != nil {
		tb.Fatalf("create probe map: %v", err)
	}
	m.Close()
}

// Return codes of the TC programs.
const (
	actPass = ^uint32(0) // TC_ACT_UNSPEC (TCX_NEXT)
	actDrop = 2          // TC_ACT_SHOT
)

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// pkt describes an Ethernet/IPv4 frame to craft.
type pkt struct {
	src, dst     string // IPv4 addresses
	proto        uint8
	sport, dport uint16
	tcpFlags     uint8
	icmpType     uint8  // ICMP: type; sport is the echo identifier
	fragOffset   uint16 // in 8-byte units
	ipOptions    int    // 4-byte words of IP options (NOPs)
	truncate     int    // bytes cut from the end of the frame
}

func syn(src string, sport uint16, dst string, dport uint16) pkt {
	return pkt{src: src, dst: dst, proto: ProtoTCP, sport: sport, dport: dport, tcpFlags: tcpSYN}
}

func tcp(src string, sport uint16, dst string, dport uint16, flags uint8) pkt {
	return pkt{src: src, dst: dst, proto: ProtoTCP, sport: sport, dport: dport, tcpFlags: flags}
}

func udp(src string, sport uint16, dst string, dport uint16) pkt {
	return pkt{src: src, dst: dst, proto: ProtoUDP, sport: sport, dport: dport}
}

func icmp(src, dst string, typ uint8, id uint16) pkt {
	return pkt{src: src, dst: dst, proto: ProtoICMP, icmpType: typ, sport: id}
}

func ethHeader(ethertype uint16) []byte {
	b := make([]byte, 14)
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 0x01})  // dst MAC
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 0x02}) // src MAC
	binary.BigEndian.PutUint16(b[12:], ethertype)
	return b
}

func ip4(s string) [4]byte { return netip.MustParseAddr(s).As4() }

func (p pkt) bytes() []byte {
	var l4 []byte
	switch p.proto {
	case ProtoTCP:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		l4[12] = 5 << 4
		l4[13] = p.tcpFlags
		binary.BigEndian.PutUint16(l4[14:], 65535)
	case ProtoUDP, ProtoSCTP:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint16(l4[4:], 8)
	case ProtoICMP:
		l4 = make([]byte, 8)
		l4[0] = p.icmpType
		binary.BigEndian.PutUint16(l4[4:], p.sport)
	}
	l4 = append(l4, []byte("payload")...)

	ihl := 5 + p.ipOptions
	ip := make([]byte, ihl*4)
	ip[0] = 4<<4 | byte(ihl)
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(l4)))
	binary.BigEndian.PutUint16(ip[6:], p.fragOffset&0x1fff)
	ip[8] = 64
	ip[9] = p.proto
	src, dst := ip4(p.src), ip4(p.dst)
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	for i := 20; i < len(ip); i++ {
		ip[i] = 1 // NOP option
	}
	frame := append(append(ethHeader(0x0800), ip...), l4...)
	return frame[:len(frame)-p.truncate]
}

// arpFrame is an ARP request from senderIP.
func arpFrame(senderIP string) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	sip := ip4(senderIP)
	copy(b[14:], sip[:])
	tip := ip4("10.244.1.1")
	copy(b[24:], tip[:])
	return append(ethHeader(0x0806), b...)
}

// ipv6Frame is an IPv6 frame from src to dst carrying a header of
// protocol next (TCP: a SYN to port 8080; ICMPv6: a neighbour
// solicitation; 59: nothing).
func ipv6Frame(src, dst string, next uint8) []byte {
	var l4 []byte
	switch next {
	case ProtoTCP:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], 40000)
		binary.BigEndian.PutUint16(l4[2:], 8080)
		l4[12] = 5 << 4
		l4[13] = tcpSYN
	case 58: // ICMPv6 neighbour solicitation for dst
		l4 = make([]byte, 24)
		l4[0] = 135
		d := netip.MustParseAddr(dst).As16()
		copy(l4[8:], d[:])
	}
	b := make([]byte, 40, 40+len(l4))
	b[0] = 6 << 4
	binary.BigEndian.PutUint16(b[4:], uint16(len(l4)))
	b[6] = next
	b[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(ethHeader(0x86dd), append(b, l4...)...)
}

// vlanTagged puts 802.1Q/802.1ad tags (TPIDs, VLAN 0) between frame's MAC
// addresses and its ethertype, outermost first.
func vlanTagged(frame []byte, tpids ...uint16) []byte {
	out := append([]byte(nil), frame[:12]...)
	for _, tpid := range tpids {
		out = binary.BigEndian.AppendUint16(out, tpid)
		out = binary.BigEndian.AppendUint16(out, 0) // PCP 0, VLAN 0
	}
	return append(out, frame[12:]...)
}

// withEthertype is frame with another ethertype.
func withEthertype(frame []byte, ethertype uint16) []byte {
	out := append([]byte(nil), frame...)
	binary.BigEndian.PutUint16(out[12:], ethertype)
	return out
}

func prefix32(ip string) netip.Prefix {
	return netip.PrefixFrom(netip.MustParseAddr(ip), 32)
}
