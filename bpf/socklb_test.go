//go:build linux

package bpf

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lbFrontend writes frontend vip/proto with the given backends the way the
// agent's plan does (backends, slots, then the master).
func lbFrontend(t *testing.T, r *Redirect, vip netip.AddrPort, proto uint8, firstID uint32, backends ...netip.AddrPort) {
	t.Helper()
	for i, b := range backends {
		id := firstID + uint32(i)
		if err := r.PutLBBackend(id, LBBackend{Address: b.Addr().As4(), Port: b.Port(), Proto: proto}); err != nil {
			t.Fatal(err)
		}
		k, err := NewLBKey(vip, proto, uint16(i+1))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.PutLBService(k, LBService{BackendID: id}); err != nil {
			t.Fatal(err)
		}
	}
	k, err := NewLBKey(vip, proto, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PutLBService(k, LBService{Count: uint16(len(backends))}); err != nil {
		t.Fatal(err)
	}
}

// udpEcho answers every datagram with "<name>:<payload>".
func udpEcho(t *testing.T, name, addr string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// udpSocket is a raw UDP socket with a receive timeout, so that sendmsg and
// recvmsg run on this thread through the cgroup hooks.
func udpSocket(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

func sockaddr(a netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Addr: a.Addr().As4(), Port: int(a.Port())}
}

// TestSocketLB runs the socket load balancing on loopback in a child
// cgroup: a "Service" address 127.0.0.2 that also has listeners of its own
// (so a connection that is not translated lands there instead of failing)
// and backends on 127.0.0.1 and 127.0.0.3.
func TestSocketLB(t *testing.T) {
	requireBPF(t)
	cg := enterTestCgroup(t)
	r, err := LoadRedirect(LoadOptions{})
	if err != nil {
		t.Fatalf("LoadRedirect: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	att, err := r.AttachCgroup(cg, "")
	if err != nil {
		t.Fatalf("AttachCgroup: %v", err)
	}
	t.Cleanup(func() { att.Close() })

	vipOwn := listenTCP(t, "vip-itself", "127.0.0.2:0")
	vip := vipOwn.addr()
	be1 := listenTCP(t, "backend-1", "127.0.0.1:0")
	be2 := listenTCP(t, "backend-2", "127.0.0.3:0")
	all := []*acceptor{vipOwn, be1, be2}
	lbFrontend(t, r, vip, ProtoTCP, 1, be1.addr(), be2.addr())

	udpVIPOwn := udpEcho(t, "vip-itself", "127.0.0.2:0")
	udpVIP := udpVIPOwn
	udpBE := udpEcho(t, "udp-backend", "127.0.0.1:0")
	lbFrontend(t, r, udpVIP, ProtoUDP, 10, udpBE)

	counted := func(t *testing.T, want map[RedirectReason]uint64, f func()) {
		t.Helper()
		before, err := r.Counters()
		if err != nil {
			t.Fatal(err)
		}
		f()
		after, err := r.Counters()
		if err != nil {
			t.Fatal(err)
		}
		for i := range NumRedirectReasons {
			if got := after[i] - before[i]; got != want[i] {
				t.Errorf("counter %s moved by %d, want %d", i, got, want[i])
			}
		}
	}

	t.Run("TCP to a frontend reaches a backend, getpeername shows the frontend", func(t *testing.T) {
		seen := map[string]int{}
		counted(t, map[RedirectReason]uint64{RedirectLBConnect: 40, RedirectPeernameRewritten: 40}, func() {
			for range 40 {
				c, err := dial(unix.SOCK_STREAM, vip, 0)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				if c.peer != vip {
					t.Errorf("getpeername = %s, want the frontend %s", c.peer, vip)
				}
				name, conn := landed(t, all...)
				seen[name]++
				if got := conn.RemoteAddr().(*net.TCPAddr).AddrPort(); got != c.local {
					t.Errorf("backend sees client %s, want %s", got, c.local)
				}
				c.close()
			}
		})
		// Random choice: 40 connections all to one of two backends has a
		// probability of 2^-39.
		if seen["backend-1"] == 0 || seen["backend-2"] == 0 || seen["vip-itself"] != 0 {
			t.Errorf("connections landed %v, want both backends and never the frontend's own listener", seen)
		}
	})

	t.Run("a UDP frontend does not translate TCP", func(t *testing.T) {
		// Nothing listens on TCP there: the kernel refuses, no counter moves.
		counted(t, nil, func() {
			c, err := dial(unix.SOCK_STREAM, udpVIP, 0)
			if err == nil {
				c.close()
				t.Errorf("TCP connect to %s got through", udpVIP)
			}
		})
	})

	t.Run("unconnected UDP: sendto the frontend, the reply comes from the frontend", func(t *testing.T) {
		fd := udpSocket(t)
		counted(t, map[RedirectReason]uint64{RedirectLBSendmsg: 3, RedirectLBReplyRewritten: 3}, func() {
			for range 3 {
				if err := unix.Sendto(fd, []byte("q"), 0, sockaddr(udpVIP)); err != nil {
					t.Fatalf("sendto: %v", err)
				}
				buf := make([]byte, 64)
				n, from, err := unix.Recvfrom(fd, buf, 0)
				if err != nil {
					t.Fatalf("recvfrom: %v", err)
				}
				if string(buf[:n]) != "udp-backend:q" {
					t.Errorf("reply %q, want it from the backend", buf[:n])
				}
				if got := sockaddrToAddrPort(from); got != udpVIP {
					t.Errorf("reply from %s, want the frontend %s", got, udpVIP)
				}
			}
		})
	})

	t.Run("connected UDP: send, recvfrom and getpeername show the frontend", func(t *testing.T) {
		fd := udpSocket(t)
		counted(t, map[RedirectReason]uint64{RedirectLBConnect: 1, RedirectLBReplyRewritten: 1, RedirectPeernameRewritten: 1}, func() {
			if err := unix.Connect(fd, sockaddr(udpVIP)); err != nil {
				t.Fatalf("connect: %v", err)
			}
			if _, err := unix.Write(fd, []byte("c")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				t.Fatalf("recvfrom: %v", err)
			}
			if string(buf[:n]) != "udp-backend:c" || sockaddrToAddrPort(from) != udpVIP {
				t.Errorf("reply %q from %s, want udp-backend:c from %s", buf[:n], sockaddrToAddrPort(from), udpVIP)
			}
			peer, err := unix.Getpeername(fd)
			if err != nil || sockaddrToAddrPort(peer) != udpVIP {
				t.Errorf("getpeername = %v, %v; want %s", peer, err, udpVIP)
			}
		})
		// Connected elsewhere, the socket no longer claims the frontend.
		other := udpEcho(t, "other", "127.0.0.1:0")
		if err := unix.Connect(fd, sockaddr(other)); err != nil {
			t.Fatal(err)
		}
		peer, err := unix.Getpeername(fd)
		if err != nil || sockaddrToAddrPort(peer) != other {
			t.Errorf("after reconnecting: getpeername = %v, %v; want %s", peer, err, other)
		}
	})

	t.Run("a frontend without backend refuses: ECONNREFUSED, not the frontend's own listener", func(t *testing.T) {
		lbFrontend(t, r, vip, ProtoTCP, 1)
		lbFrontend(t, r, udpVIP, ProtoUDP, 10)
		defer lbFrontend(t, r, vip, ProtoTCP, 1, be1.addr(), be2.addr())
		defer lbFrontend(t, r, udpVIP, ProtoUDP, 10, udpBE)
		counted(t, map[RedirectReason]uint64{RedirectLBNoBackend: 3}, func() {
			if c, err := dial(unix.SOCK_STREAM, vip, 0); !errors.Is(err, unix.ECONNREFUSED) {
				if c != nil {
					c.close()
				}
				t.Errorf("TCP connect = %v, want ECONNREFUSED", err)
			}
			fd := udpSocket(t)
			if err := unix.Sendto(fd, []byte("q"), 0, sockaddr(udpVIP)); !errors.Is(err, unix.ECONNREFUSED) {
				t.Errorf("UDP sendto = %v, want ECONNREFUSED", err)
			}
			if err := unix.Connect(udpSocket(t), sockaddr(udpVIP)); !errors.Is(err, unix.ECONNREFUSED) {
				t.Errorf("UDP connect = %v, want ECONNREFUSED", err)
			}
		})
	})

	t.Run("a slot naming a missing backend refuses", func(t *testing.T) {
		if err := r.DeleteLBBackend(10); err != nil {
			t.Fatal(err)
		}
		defer lbFrontend(t, r, udpVIP, ProtoUDP, 10, udpBE)
		counted(t, map[RedirectReason]uint64{RedirectLBNoBackend: 1}, func() {
			if err := unix.Sendto(udpSocket(t), []byte("q"), 0, sockaddr(udpVIP)); !errors.Is(err, unix.ECONNREFUSED) {
				t.Errorf("UDP sendto = %v, want ECONNREFUSED", err)
			}
		})
	})

	t.Run("an opted-in namespace's TCP to a redirected Service goes to the proxy; its UDP is load balanced", func(t *testing.T) {
		proxy := listenTCP(t, "proxy", "127.0.0.1:0")
		if err := r.SetProxy(proxy.addr()); err != nil {
			t.Fatal(err)
		}
		cookie, err := NetnsCookie("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		if err := r.OptIn(cookie); err != nil {
			t.Fatal(err)
		}
		defer r.OptOut(cookie)
		if err := r.PutService(vip); err != nil {
			t.Fatal(err)
		}
		defer r.DeleteService(vip)
		counted(t, map[RedirectReason]uint64{RedirectRedirected: 1, RedirectEstablished: 1, RedirectPeernameRewritten: 1,
			RedirectLBSendmsg: 1, RedirectLBReplyRewritten: 1}, func() {
			c, err := dial(unix.SOCK_STREAM, vip, 0)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.close()
			if name, _ := landed(t, append(all, proxy)...); name != "proxy" {
				t.Errorf("landed on %s, want the proxy (it does the L7 load balancing)", name)
			}
			fd := udpSocket(t)
			if err := unix.Sendto(fd, []byte("q"), 0, sockaddr(udpVIP)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			if n, _, err := unix.Recvfrom(fd, buf, 0); err != nil || string(buf[:n]) != "udp-backend:q" {
				t.Errorf("UDP reply %q, %v", buf[:n], err)
			}
		})
	})
}
