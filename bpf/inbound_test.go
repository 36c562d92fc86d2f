//go:build linux

package bpf

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// TestInboundProxyConfig: SetInboundProxy refuses what the programs could
// not use safely and reads back what it wrote.
func TestInboundProxyConfig(t *testing.T) {
	p := loadTestPolicy(t, 0)
	tests := map[string]struct {
		cfg     InboundProxy
		wantErr bool
		want    InboundProxy
	}{
		"off":                        {cfg: InboundProxy{}, want: InboundProxy{}},
		"port 0 clears the marks":    {cfg: InboundProxy{Mark: 1, SocketMark: 2}, want: InboundProxy{}},
		"on":                         {cfg: InboundProxy{Port: ProxyInboundPort, Mark: 0x0400_0000, SocketMark: ProxyInboundSocketMark}, want: InboundProxy{Port: ProxyInboundPort, Mark: 0x0400_0000, SocketMark: ProxyInboundSocketMark}},
		"no socket mark":             {cfg: InboundProxy{Port: ProxyInboundPort, Mark: 0x0400_0000}, wantErr: true},
		"no packet mark":             {cfg: InboundProxy{Port: ProxyInboundPort, SocketMark: ProxyInboundSocketMark}, wantErr: true},
		"socket mark with its bit":   {cfg: InboundProxy{Port: ProxyInboundPort, Mark: 0x0400_0000, SocketMark: 0x0c00_0000}, wantErr: true},
		"the same mark for the both": {cfg: InboundProxy{Port: ProxyInboundPort, Mark: 0x10, SocketMark: 0x10}, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := p.SetInboundProxy(InboundProxy{Port: 1, Mark: 1, SocketMark: 2}); err != nil {
				t.Fatal(err)
			}
			err := p.SetInboundProxy(tc.cfg)
			if tc.wantErr {
				if !errors.Is(err, ErrBadInboundProxy) {
					t.Fatalf("err = %v, want ErrBadInboundProxy", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, err := p.InboundProxy(); err != nil || got != tc.want {
				t.Errorf("InboundProxy() = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestInboundCaptures: what PutInboundCapture writes InboundCaptures lists
// and DeleteInboundCapture removes; bad input is refused.
func TestInboundCaptures(t *testing.T) {
	p := loadTestPolicy(t, 0)
	a, b := netip.MustParseAddrPort(pod2IP+":8080"), netip.MustParseAddrPort(pod3IP+":65535")
	for _, ap := range []netip.AddrPort{a, b, a} {
		if err := p.PutInboundCapture(ap.Addr(), ap.Port()); err != nil {
			t.Fatal(err)
		}
	}
	got, err := p.InboundCaptures()
	if err != nil || len(got) != 2 || !(got[0] == a && got[1] == b || got[0] == b && got[1] == a) {
		t.Fatalf("InboundCaptures() = %v, %v; want %v and %v", got, err, a, b)
	}
	if err := p.PutInboundCapture(netip.MustParseAddr("fd00::1"), 80); !errors.Is(err, ErrNotIPv4) {
		t.Errorf("IPv6: err = %v, want ErrNotIPv4", err)
	}
	if err := p.PutInboundCapture(a.Addr(), 0); err == nil {
		t.Error("port 0 was written")
	}
	if err := p.PutInboundCapture(netip.Addr{}, 80); err == nil {
		t.Error("the zero address was written")
	}
	for _, ap := range []netip.AddrPort{a, b, b} { // deleting twice is fine
		if err := p.DeleteInboundCapture(ap.Addr(), ap.Port()); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := p.InboundCaptures(); err != nil || len(got) != 0 {
		t.Errorf("left %v, %v", got, err)
	}
}

// TestInboundCaptureVerdicts runs packets through from_pod and from_uplink
// (BPF_PROG_TEST_RUN, in a private network namespace, whose sockets are the
// ones the programs look up: none): captured TCP is dropped and counted
// when no socket of the proxy's can take it; other traffic is untouched.
// A test run cannot hand a packet to a socket (no tc ingress), so what
// does — the proxy's listener and connections, and that only they do — is
// tested on real traffic: agent/e2e TestInboundCapture.
func TestInboundCaptureVerdicts(t *testing.T) {
	type count struct {
		dir    Direction
		reason Reason
	}
	on := InboundProxy{Port: ProxyInboundPort, Mark: 0x0400_0000, SocketMark: ProxyInboundSocketMark}
	const capturedPort = 8080
	tests := map[string]struct {
		flags  EndpointFlags
		cfg    InboundProxy
		uplink bool // from_uplink, to the pod; else from_pod, from the pod to pod2
		frame  []byte
		want   []count
	}{
		"from a pod, port not captured": {cfg: on, frame: syn(podIP, 40000, pod2IP, 9090).bytes(),
			want: []count{{Egress, ReasonAllowedUnenforced}}},
		"from a pod, UDP to the captured port": {cfg: on, frame: udp(podIP, 40000, pod2IP, capturedPort).bytes(),
			want: []count{{Egress, ReasonAllowedUnenforced}}},
		"from a pod, no proxy configured": {frame: syn(podIP, 40000, pod2IP, capturedPort).bytes(),
			want: []count{{Egress, ReasonAllowedUnenforced}, {Ingress, ReasonDropNoListener}}},
		"from a pod, no listener": {cfg: on, frame: syn(podIP, 40000, pod2IP, capturedPort).bytes(),
			want: []count{{Egress, ReasonAllowedUnenforced}, {Ingress, ReasonDropNoListener}}},
		"from a pod, an ACK without a connection": {cfg: on, frame: tcp(podIP, 40000, pod2IP, capturedPort, tcpACK).bytes(),
			want: []count{{Egress, ReasonAllowedUnenforced}, {Ingress, ReasonDropNoListener}}},
		"from a pod denied by its egress policy: not captured": {flags: EnforceEgress, cfg: on, frame: syn(podIP, 40000, pod2IP, capturedPort).bytes(),
			want: []count{{Egress, ReasonDeniedDefault}}},
		"from another node, port not captured": {cfg: on, uplink: true, frame: syn(pod3IP, 40000, pod2IP, 9090).bytes()},
		"from another node, no listener": {cfg: on, uplink: true, frame: syn(pod3IP, 40000, pod2IP, capturedPort).bytes(),
			want: []count{{Ingress, ReasonDropNoListener}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := loadTestPolicy(t, tc.flags)
			if err := p.SetInboundProxy(tc.cfg); err != nil {
				t.Fatal(err)
			}
			if err := p.PutInboundCapture(netip.MustParseAddr(pod2IP), capturedPort); err != nil {
				t.Fatal(err)
			}
			prog := p.Program(Egress)
			if tc.uplink {
				prog = p.objs.FromUplink
			}
			var before, after PolicyCounters
			var ret uint32
			inPrivateNetns(t, func() error {
				var err error
				if before, err = p.Counters(); err != nil {
					return err
				}
				if ret, err = prog.Run(&ebpf.RunOptions{Data: tc.frame}); err != nil {
					return err
				}
				after, err = p.Counters()
				return err
			})
			wantRet := actPass
			for _, c := range tc.want {
				if c.reason.Dropped() {
					wantRet = actDrop
				}
			}
			if ret != wantRet {
				t.Errorf("returned %d, want %d", int32(ret), int32(wantRet))
			}
			for d := range 2 {
				for r := range NumReasons {
					want := uint64(0)
					for _, c := range tc.want {
						if c.dir == Direction(d) && c.reason == r {
							want = 1
						}
					}
					if got := after[d][r].Packets - before[d][r].Packets; got != want {
						t.Errorf("counter %s/%s moved by %d, want %d", Direction(d), r, got, want)
					}
				}
			}
		})
	}
}
