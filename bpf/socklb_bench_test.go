//go:build linux

package bpf

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkSocketLBConnect measures what the socket load balancing adds to
// a TCP connect() on loopback, in one run: socket + connect (answered by
// the kernel's SYN/ACK, the listener accepts in the background) + an
// RST close (SO_LINGER 0, so no TIME_WAIT piles up), directly to the
// backend without programs, directly with the programs attached (the
// address is not a frontend), and to a frontend with 16 backends. Also one
// UDP sendto, direct vs to a frontend. `make bench-bpf`; figures in
// docs/benchmarks.md ("Socket load balancing").
func BenchmarkSocketLBConnect(b *testing.B) {
	requireBPF(b)
	cg := enterTestCgroup(b)
	r, err := LoadRedirect(LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	backend := ln.Addr().(*net.TCPAddr).AddrPort()
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer uc.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			if _, _, err := uc.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
		}
	}()
	udpBackend := uc.LocalAddr().(*net.UDPAddr).AddrPort()

	vip := netip.MustParseAddrPort("127.0.0.2:80")
	udpVIP := netip.MustParseAddrPort("127.0.0.2:53")
	backends := make([]netip.AddrPort, 16)
	udpBackends := make([]netip.AddrPort, 16)
	for i := range backends {
		backends[i], udpBackends[i] = backend, udpBackend // one listener: the cost is the lookup, not the spread
	}
	putFrontend := func(tb testing.TB, f netip.AddrPort, proto uint8, first uint32, bs []netip.AddrPort) {
		for i, be := range bs {
			id := first + uint32(i)
			if err := r.PutLBBackend(id, LBBackend{Address: be.Addr().As4(), Port: be.Port(), Proto: proto}); err != nil {
				tb.Fatal(err)
			}
			k, _ := NewLBKey(f, proto, uint16(i+1))
			if err := r.PutLBService(k, LBService{BackendID: id}); err != nil {
				tb.Fatal(err)
			}
		}
		k, _ := NewLBKey(f, proto, 0)
		if err := r.PutLBService(k, LBService{Count: uint16(len(bs))}); err != nil {
			tb.Fatal(err)
		}
	}
	putFrontend(b, vip, ProtoTCP, 1, backends)
	putFrontend(b, udpVIP, ProtoUDP, 100, udpBackends)

	connect := func(b *testing.B, to netip.AddrPort) {
		sa := sockaddr(to)
		linger := &unix.Linger{Onoff: 1, Linger: 0}
		b.ReportAllocs()
		for b.Loop() {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			if err := unix.Connect(fd, sa); err != nil {
				b.Fatal(err)
			}
			unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, linger)
			unix.Close(fd)
		}
	}
	sendto := func(b *testing.B, to netip.AddrPort) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fd)
		sa, msg := sockaddr(to), []byte("q")
		for b.Loop() {
			if err := unix.Sendto(fd, msg, 0, sa); err != nil {
				b.Fatal(err)
			}
		}
	}

	b.Run("tcp-direct-no-programs", func(b *testing.B) { connect(b, backend) })
	b.Run("udp-direct-no-programs", func(b *testing.B) { sendto(b, udpBackend) })
	att, err := r.AttachCgroup(cg, "")
	if err != nil {
		b.Fatal(err)
	}
	defer att.Close()
	b.Run("tcp-direct-programs-attached", func(b *testing.B) { connect(b, backend) })
	b.Run("tcp-socket-lb-16-backends", func(b *testing.B) { connect(b, vip) })
	// The same, alternating one direct and one load balanced connect() in
	// each iteration, so that both see the same machine load (this VM is
	// shared: runs seconds apart differ by more than the programs cost).
	b.Run("tcp-alternating", func(b *testing.B) {
		var direct, lb time.Duration
		one := func(to netip.AddrPort) time.Duration {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := unix.Connect(fd, sockaddr(to)); err != nil {
				b.Fatal(err)
			}
			d := time.Since(start)
			unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			unix.Close(fd)
			return d
		}
		n := 0
		for b.Loop() {
			direct += one(backend)
			lb += one(vip)
			n++
		}
		b.ReportMetric(float64(direct.Nanoseconds())/float64(n), "ns-connect-direct")
		b.ReportMetric(float64(lb.Nanoseconds())/float64(n), "ns-connect-lb")
		b.ReportMetric(float64(lb)/float64(direct), "lb/direct")
	})
	b.Run("udp-direct-programs-attached", func(b *testing.B) { sendto(b, udpBackend) })
	b.Run("udp-socket-lb-16-backends", func(b *testing.B) { sendto(b, udpVIP) })
}
