//go:build linux

package testapp

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// The node proxy stand-in: what the node Envoy does at L4 where no Envoy
// image can be had (make cluster-up's cluster). It accepts the connections
// the eBPF redirect sends to the outbound capture port, asks the socket for
// its original destination (SO_ORIGINAL_DST, which nodemesh's cgroup
// getsockopt program answers), connects there from the client pod's own
// address (IP_TRANSPARENT, as Envoy's original_src does) with the proxy's
// mark (so the redirect does not capture its own upstream), and splices.
// It keeps a record of every connection it carried, served in Prometheus
// text at :15090/stats/prometheus — the proof that a request went through a
// node proxy. It routes nothing at L7: VirtualService routing needs Envoy.

const (
	solIP         = 0  // SOL_IP
	soOriginalDst = 80 // SO_ORIGINAL_DST
	ipTransparent = 19 // IP_TRANSPARENT
	soMark        = 36 // SO_MARK
	// proxyMark is the mark the node proxy's upstream sockets carry (Envoy's
	// original_src mark); the redirect leaves them alone.
	proxyMark = 0x539
)

// proxyStats counts the connections carried, by source and original
// destination.
type proxyStats struct {
	mu    sync.Mutex
	conns map[[2]string]int // {source IP, destination} → connections
	fails map[string]int    // reason → count
}

func (s *proxyStats) carried(src, dst string) {
	s.mu.Lock()
	s.conns[[2]string{src, dst}]++
	s.mu.Unlock()
}

func (s *proxyStats) failed(reason string) {
	s.mu.Lock()
	s.fails[reason]++
	s.mu.Unlock()
}

// ServeHTTP writes the record in Prometheus text format.
func (s *proxyStats) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	keys := make([][2]string, 0, len(s.conns))
	for k := range s.conns {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	fmt.Fprintln(w, "# HELP nodemesh_standin_proxy_connections_total Connections the node proxy stand-in carried, by client address and original destination.")
	fmt.Fprintln(w, "# TYPE nodemesh_standin_proxy_connections_total counter")
	for _, k := range keys {
		fmt.Fprintf(w, "nodemesh_standin_proxy_connections_total{source=%q,destination=%q} %d\n", k[0], k[1], s.conns[k])
	}
	fmt.Fprintln(w, "# HELP nodemesh_standin_proxy_failures_total Connections the stand-in could not carry, by reason.")
	fmt.Fprintln(w, "# TYPE nodemesh_standin_proxy_failures_total counter")
	reasons := make([]string, 0, len(s.fails))
	for r := range s.fails {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(w, "nodemesh_standin_proxy_failures_total{reason=%q} %d\n", r, s.fails[r])
	}
}

func runNodeProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("node-proxy", flag.ContinueOnError)
	listen := fs.String("listen", "0.0.0.0:15001", "the outbound capture address the eBPF redirect sends connections to")
	stats := fs.String("stats", ":15090", "where the record is served (/stats/prometheus) and readiness (/ready)")
	timeout := fs.Duration("connect-timeout", 5*time.Second, "upstream connect timeout")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	l, err := net.Listen("tcp4", *listen)
	if err != nil {
		return err
	}
	st := &proxyStats{conns: map[[2]string]int{}, fails: map[string]int{}}
	mux := http.NewServeMux()
	mux.Handle("/stats/prometheus", st)
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "LIVE\n") })
	errc := make(chan error, 2)
	go func() { errc <- serveHTTP(ctx, *stats, mux) }()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	fmt.Fprintf(stdout, "node proxy stand-in on %s, record on %s/stats/prometheus\n", *listen, *stats)
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go carry(c.(*net.TCPConn), *timeout, st, stderr)
	}
}

// carry connects c to its original destination from c's client address and
// splices the two until both directions end.
func carry(c *net.TCPConn, timeout time.Duration, st *proxyStats, stderr io.Writer) {
	defer c.Close()
	dst, err := originalDst(c)
	if err != nil {
		st.failed("no-original-destination")
		fmt.Fprintf(stderr, "node-proxy: %s: %v\n", c.RemoteAddr(), err)
		return
	}
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()},
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = errors.Join(
					syscall.SetsockoptInt(int(fd), solIP, ipTransparent, 1),
					syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soMark, proxyMark))
			})
			return errors.Join(err, serr)
		}}
	up, err := d.Dial("tcp4", dst.String())
	if err != nil {
		st.failed("upstream-connect")
		fmt.Fprintf(stderr, "node-proxy: %s → %s: %v\n", src, dst, err)
		return
	}
	defer up.Close()
	st.carried(src.String(), dst.String())
	var wg sync.WaitGroup
	wg.Add(2)
	half := func(to, from *net.TCPConn) {
		defer wg.Done()
		io.Copy(to, from)
		to.CloseWrite()
	}
	go half(up.(*net.TCPConn), c)
	go half(c, up.(*net.TCPConn))
	wg.Wait()
}

// originalDst is getsockopt(SOL_IP, SO_ORIGINAL_DST).
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var sa syscall.RawSockaddrInet4
	var opErr error
	err = rc.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(sa))
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, solIP, soOriginalDst,
			uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			opErr = errno
		}
	})
	if err = errors.Join(err, opErr); err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", err)
	}
	if sa.Family != syscall.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: family %d, not IPv4", sa.Family)
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}

// proxyRecord parses the stand-in's record: connections by "source →
// destination". Used by tests and by whoever asks the stand-in what it
// carried.
func proxyRecord(text string) map[string]int {
	out := map[string]int{}
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "nodemesh_standin_proxy_connections_total{") {
			continue
		}
		var src, dst string
		var n int
		if _, err := fmt.Sscanf(line, "nodemesh_standin_proxy_connections_total{source=%q,destination=%q} %d", &src, &dst, &n); err == nil {
			out[src+" → "+dst] = n
		}
	}
	return out
}

func init() {
	commands["node-proxy"] = struct {
		short string
		run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	}{"the node proxy stand-in (L4, transparent, keeps a record) where no Envoy image exists", runNodeProxy}
}
