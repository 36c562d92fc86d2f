//go:build linux

package bpf

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// acceptor is a loopback listener that hands accepted connections to a channel.
type acceptor struct {
	name  string
	ln    net.Listener
	conns chan net.Conn
}

func listenTCP(t *testing.T, name, addr string) *acceptor {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // the node proxy (Envoy) listens with plain TCP
	ln, err := lc.Listen(context.Background(), "tcp4", addr)
	if err != nil {
		t.Fatalf("listen %s on %s: %v", name, addr, err)
	}
	return acceptFrom(t, name, ln)
}

// acceptFrom hands the connections ln accepts to an acceptor.
func acceptFrom(t *testing.T, name string, ln net.Listener) *acceptor {
	t.Helper()
	a := &acceptor{name: name, ln: ln, conns: make(chan net.Conn, 8)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(a.conns)
				return
			}
			a.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range a.conns {
			c.Close()
		}
	})
	return a
}

func (a *acceptor) addr() netip.AddrPort { return a.ln.Addr().(*net.TCPAddr).AddrPort() }

// landed waits for the one listener that accepts the next connection.
func landed(t *testing.T, as ...*acceptor) (string, net.Conn) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		for _, a := range as {
			select {
			case c := <-a.conns:
				t.Cleanup(func() { c.Close() })
				return a.name, c
			default:
			}
		}
		select {
		case <-timeout:
			t.Fatal("no listener accepted the connection")
		case <-time.After(time.Millisecond):
		}
	}
}

// client is a TCP connection made with raw, blocking syscalls, so that the
// connect() runs on the calling (locked) thread with its credentials.
type client struct {
	fd          int
	local, peer netip.AddrPort
}

func sockaddrToAddrPort(sa unix.Sockaddr) netip.AddrPort {
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))
}

func dial(sotype int, to netip.AddrPort, mark int) (*client, error) {
	fd, err := unix.Socket(unix.AF_INET, sotype|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	c := &client{fd: fd}
	if mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, mark); err != nil {
			c.close()
			return nil, err
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())}); err != nil {
		c.close()
		return nil, err
	}
	local, err := unix.Getsockname(fd)
	if err != nil {
		c.close()
		return nil, err
	}
	peer, err := unix.Getpeername(fd)
	if err != nil {
		c.close()
		return nil, err
	}
	c.local, c.peer = sockaddrToAddrPort(local), sockaddrToAddrPort(peer)
	return c, nil
}

func (c *client) close() { unix.Close(c.fd) }

// dialAs dials on a thread whose real UID is uid (bpf_get_current_uid_gid
// reads the real UID). Only that thread changes: the raw setresuid is
// per-thread, unlike syscall.Setresuid. If restoring fails, the thread stays
// locked and the runtime discards it.
func dialAs(uid int, to netip.AddrPort) (*client, error) {
	type result struct {
		c   *client
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		keep := ^uintptr(0) // -1: leave unchanged
		if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), keep, keep); errno != 0 {
			runtime.UnlockOSThread()
			done <- result{nil, errno}
			return
		}
		c, err := dial(unix.SOCK_STREAM, to, 0)
		if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, 0, keep, keep); errno != 0 {
			done <- result{c, errors.Join(err, errno)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// TestRedirectChain runs connect4 -> sockops -> getsockopt(SO_ORIGINAL_DST) ->
// getpeername on loopback only: the test process moves into a child cgroup
// with the programs attached, a "Service" on 127.0.0.2 is redirected to a
// "proxy" on 127.0.0.1, and whatever is not redirected reaches a listener on
// the Service address itself.
func TestRedirectChain(t *testing.T) {
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
	t.Cleanup(func() {
		if err := att.Close(); err != nil {
			t.Errorf("detach: %v", err)
		}
	})

	proxy := listenTCP(t, "proxy", "127.0.0.1:0")
	svcAddr := "127.0.0.2:80"
	if ln, err := net.Listen("tcp4", svcAddr); err != nil {
		svcAddr = "127.0.0.2:0" // port 80 taken on this machine
	} else {
		ln.Close()
	}
	svc := listenTCP(t, "service", svcAddr)
	hbone := listenTCP(t, "hbone", "127.0.0.2:15008")
	other := listenTCP(t, "not-a-service", "127.0.0.2:0")
	all := []*acceptor{proxy, svc, hbone, other}

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
	for _, a := range []netip.AddrPort{svc.addr(), hbone.addr()} {
		if err := r.PutService(a); err != nil {
			t.Fatal(err)
		}
	}

	// counted runs f and checks that exactly the listed counters moved, each by one.
	counted := func(t *testing.T, want []RedirectReason, f func()) {
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
		var wantDelta RedirectCounters
		for _, w := range want {
			wantDelta[w]++
		}
		for i := range NumRedirectReasons {
			if got := after[i] - before[i]; got != wantDelta[i] {
				t.Errorf("counter %s moved by %d, want %d", i, got, wantDelta[i])
			}
		}
	}

	t.Run("service connection goes to the proxy", func(t *testing.T) {
		counted(t, []RedirectReason{RedirectRedirected, RedirectEstablished, RedirectOrigDstAnswered, RedirectPeernameRewritten}, func() {
			c, err := dial(unix.SOCK_STREAM, svc.addr(), 0)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.close()
			if c.peer != svc.addr() {
				t.Errorf("getpeername = %s, want the service %s", c.peer, svc.addr())
			}
			name, conn := landed(t, all...)
			if name != "proxy" {
				t.Fatalf("connection landed on %s, want proxy", name)
			}
			if got := conn.RemoteAddr().(*net.TCPAddr).AddrPort(); got != c.local {
				t.Errorf("proxy sees client %s, want %s", got, c.local)
			}
			od, err := OriginalDst(conn.(*net.TCPConn))
			if err != nil {
				t.Fatalf("SO_ORIGINAL_DST: %v", err)
			}
			if od != svc.addr() {
				t.Errorf("SO_ORIGINAL_DST = %s, want %s", od, svc.addr())
			}
			// The redirected connection carries data.
			if _, err := unix.Write(c.fd, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
				t.Errorf("proxy read %q, %v", buf, err)
			}
		})
	})

	notRedirected := []struct {
		name   string
		want   RedirectReason
		target *acceptor
		dial   func() (*client, error)
	}{
		{"destination not a service", RedirectSkipNotService, other, func() (*client, error) {
			return dial(unix.SOCK_STREAM, other.addr(), 0)
		}},
		{"port 15008", RedirectSkipHBONE, hbone, func() (*client, error) {
			return dial(unix.SOCK_STREAM, hbone.addr(), 0)
		}},
		{"UID 1337", RedirectSkipUID, svc, func() (*client, error) {
			return dialAs(IstioProxyUID, svc.addr())
		}},
		{"socket marked 0x539", RedirectSkipMark, svc, func() (*client, error) {
			return dial(unix.SOCK_STREAM, svc.addr(), IstioSkipMark)
		}},
	}
	for _, tc := range notRedirected {
		t.Run(tc.name+" is not redirected", func(t *testing.T) {
			counted(t, []RedirectReason{tc.want}, func() {
				c, err := tc.dial()
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				defer c.close()
				if name, _ := landed(t, all...); name != tc.target.name {
					t.Errorf("connection landed on %s, want %s", name, tc.target.name)
				}
				if c.peer != tc.target.addr() {
					t.Errorf("getpeername = %s, want %s", c.peer, tc.target.addr())
				}
			})
		})
	}

	t.Run("UDP is not redirected", func(t *testing.T) {
		uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(svc.addr()))
		if err != nil {
			t.Skipf("UDP port %s taken: %v", svc.addr(), err)
		}
		defer uc.Close()
		counted(t, []RedirectReason{RedirectSkipNotTCP}, func() {
			c, err := dial(unix.SOCK_DGRAM, svc.addr(), 0)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.close()
			if _, err := unix.Write(c.fd, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			uc.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 16)
			n, _, err := uc.ReadFromUDPAddrPort(buf)
			if err != nil || string(buf[:n]) != "ping" {
				t.Errorf("service read %q, %v", buf[:n], err)
			}
		})
	})

	t.Run("netns not opted in is not redirected", func(t *testing.T) {
		if err := r.OptOut(cookie); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := r.OptIn(cookie); err != nil {
				t.Fatal(err)
			}
		}()
		counted(t, nil, func() {
			c, err := dial(unix.SOCK_STREAM, svc.addr(), 0)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.close()
			if name, _ := landed(t, all...); name != "service" {
				t.Errorf("connection landed on %s, want service", name)
			}
		})
	})

	t.Run("a proxy socket without the record gets the kernel's answer", func(t *testing.T) {
		counted(t, []RedirectReason{RedirectSkipNotService, RedirectOrigDstMiss}, func() {
			c, err := dial(unix.SOCK_STREAM, other.addr(), 0)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.close()
			_, conn := landed(t, all...)
			if od, err := OriginalDst(conn.(*net.TCPConn)); err == nil {
				t.Errorf("SO_ORIGINAL_DST = %s on a connection that was not redirected", od)
			}
		})
	})
}
