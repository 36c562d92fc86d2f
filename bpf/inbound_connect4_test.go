//go:build linux

package bpf

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// dialFrom connects a TCP socket bound to from (port 0) with SO_MARK mark
// (0: none) to to, with raw syscalls on the calling thread.
func dialFrom(from netip.Addr, to netip.AddrPort, mark int) (*client, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
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
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: from.As4()}); err != nil {
		c.close()
		return nil, err
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

// TestInboundConnect4: cgroup/connect4 sends the node proxy's upstream
// connection (a socket of another netns than the pod's, bound to a local
// pod's address) to a captured {pod, port} to the inbound listener, with
// the pod as SO_ORIGINAL_DST, and nothing else — on loopback, in a child
// cgroup: "pods" are 127.0.0.3 (the client) and 127.0.0.4 (the server),
// the node proxy's address 127.0.0.1. The maps the agent shares with the
// policy object through the pin directory are written directly here.
func TestInboundConnect4(t *testing.T) {
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

	inbound := listenMarked(t, "inbound", "127.0.0.1:0", int(ProxyInboundSocketMark))
	impostor := listenMarked(t, "impostor", "127.0.0.1:0", 0)
	pod := listenTCP(t, "pod", "127.0.0.4:0")
	uncaptured := listenTCP(t, "uncaptured", "127.0.0.4:0")
	all := []*acceptor{inbound, impostor, pod, uncaptured}
	if err := r.SetProxy(netip.MustParseAddrPort("127.0.0.1:15001")); err != nil {
		t.Fatal(err)
	}
	k, err := inboundKeyOf(pod.addr().Addr(), pod.addr().Port())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.objs.NmInbound.Put(&k, uint32(0)); err != nil {
		t.Fatal(err)
	}
	cookie, err := NetnsCookie("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	clientIP, nodeIP := netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.1")
	setPod := func(t *testing.T, netns uint64) {
		t.Helper()
		v := localEndpoint{Endpoint: Endpoint{IP: clientIP.As4(), Identity: 1000}, NetnsCookie: netns}
		if err := r.objs.NmLocalEps.Put(clientIP.As4(), &v); err != nil {
			t.Fatal(err)
		}
	}
	setListener := func(t *testing.T, port uint16) {
		t.Helper()
		v := inboundConfig{PktMark: 0x0400_0000, SockMark: ProxyInboundSocketMark, Port: port}
		if err := r.objs.NmInboundCfg.Put(uint32(0), &v); err != nil {
			t.Fatal(err)
		}
	}

	tests := map[string]struct {
		podNetns uint64 // the client pod's netns cookie in nm_local_eps
		listener *acceptor
		from     netip.Addr
		to       *acceptor
		mark     int
		want     string // listener, or "" for EPERM
		reasons  []RedirectReason
	}{
		"the proxy's upstream to a captured port goes to the inbound listener": {
			podNetns: cookie + 1, listener: inbound, from: clientIP, to: pod, want: "inbound",
			reasons: []RedirectReason{RedirectInboundCaptured, RedirectEstablished, RedirectOrigDstAnswered, RedirectPeernameRewritten},
		},
		"the inbound listener's own upstream (0x539) goes to the pod": {
			podNetns: cookie + 1, listener: inbound, from: clientIP, to: pod, mark: int(ProxyInboundUpstreamMark), want: "pod",
			reasons: []RedirectReason{RedirectInboundSkipMark},
		},
		"a port not captured goes to the pod": {
			podNetns: cookie + 1, listener: inbound, from: clientIP, to: uncaptured, want: "uncaptured",
		},
		"a socket of the pod's own netns goes to the pod": {
			podNetns: cookie, listener: inbound, from: clientIP, to: pod, want: "pod",
		},
		"a socket with a node address goes to the pod": {
			podNetns: cookie + 1, listener: inbound, from: nodeIP, to: pod, want: "pod",
		},
		"a listener without the proxy's mark: EPERM": {
			podNetns: cookie + 1, listener: impostor, from: clientIP, to: pod,
			reasons: []RedirectReason{RedirectInboundRefused},
		},
		"no listener configured: EPERM": {
			podNetns: cookie + 1, from: clientIP, to: pod,
			reasons: []RedirectReason{RedirectInboundRefused},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			setPod(t, tc.podNetns)
			port := uint16(0)
			if tc.listener != nil {
				port = tc.listener.addr().Port()
			}
			setListener(t, port)
			before, err := r.Counters()
			if err != nil {
				t.Fatal(err)
			}
			c, err := dialFrom(tc.from, tc.to.addr(), tc.mark)
			if tc.want == "" {
				if !errors.Is(err, unix.EPERM) {
					t.Fatalf("connect: %v, want EPERM", err)
				}
			} else {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				defer c.close()
				got, conn := landed(t, all...)
				if got != tc.want {
					t.Fatalf("landed on %s, want %s", got, tc.want)
				}
				if c.peer != tc.to.addr() {
					t.Errorf("getpeername = %s, want %s", c.peer, tc.to.addr())
				}
				if got == "inbound" {
					// The listener sees the client pod as its peer, and
					// the pod as the original destination.
					if peer := conn.RemoteAddr().(*net.TCPAddr).AddrPort(); peer != c.local {
						t.Errorf("the listener's peer is %s, want the client's %s", peer, c.local)
					}
					orig, err := OriginalDst(conn.(*net.TCPConn))
					if err != nil || orig != tc.to.addr() {
						t.Errorf("SO_ORIGINAL_DST = %s, %v; want %s", orig, err, tc.to.addr())
					}
				}
			}
			after, err := r.Counters()
			if err != nil {
				t.Fatal(err)
			}
			var want RedirectCounters
			for _, w := range tc.reasons {
				want[w]++
			}
			for i := range NumRedirectReasons {
				if got := after[i] - before[i]; got != want[i] {
					t.Errorf("counter %s moved by %d, want %d", i, got, want[i])
				}
			}
		})
	}
}

// listenMarked is listenTCP with SO_MARK mark (0: none) on the listener.
func listenMarked(t *testing.T, name, addr string, mark int) *acceptor {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if mark != 0 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
			}
		})
		return errors.Join(err, serr)
	}}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp4", addr)
	if err != nil {
		t.Fatalf("listen %s on %s: %v", name, addr, err)
	}
	return acceptFrom(t, name, ln)
}
