//go:build linux

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/nodemesh/nodemesh/bpf"
)

// The benchmarks' helper modes: a server (64-byte echo on :9000, a sink on
// :9001), clients that measure request/response (rr), connection set-up
// (crr) and bulk throughput, and a splicing proxy on 15001. Clients print one
// JSON line (perfResult).

const (
	perfEchoPort = 9000
	perfSinkPort = 9001
	perfMsgSize  = 64
)

// perfResult is what a measuring helper prints.
type perfResult struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_us,omitempty"`
	P99  float64 `json:"p99_us,omitempty"`
	Mean float64 `json:"mean_us,omitempty"`
	Gbit float64 `json:"gbit_s,omitempty"`
}

func summarize(samples []time.Duration) perfResult {
	slices.Sort(samples)
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	pct := func(p float64) time.Duration { return samples[min(len(samples)-1, int(p*float64(len(samples))))] }
	return perfResult{N: len(samples), P50: us(pct(0.50)), P99: us(pct(0.99)), Mean: us(sum / time.Duration(len(samples)))}
}

func printResult(r perfResult) error {
	return json.NewEncoder(stdout()).Encode(r)
}

// perfServe runs the echo and sink listeners until killed.
func perfServe() error {
	el, err := listen(fmt.Sprintf(":%d", perfEchoPort))
	if err != nil {
		return err
	}
	sl, err := listen(fmt.Sprintf(":%d", perfSinkPort))
	if err != nil {
		return err
	}
	go acceptLoop(sl, func(c net.Conn) {
		// Read everything, then answer with one byte so the client
		// times the whole transfer.
		if _, err := io.Copy(io.Discard, c); err == nil {
			c.Write([]byte{1})
		}
	})
	fmt.Println("ready")
	acceptLoop(el, func(c net.Conn) {
		buf := make([]byte, perfMsgSize)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	return nil
}

func acceptLoop(l net.Listener, handle func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

func roundTrip(c net.Conn, buf []byte) error {
	if _, err := c.Write(buf); err != nil {
		return err
	}
	_, err := io.ReadFull(c, buf)
	return err
}

// perfRR: address, count. Count 64-byte round trips on one connection
// (after a warm-up of count/10).
func perfRR(args []string) error {
	count, _ := strconv.Atoi(args[1])
	c, err := dialer(5*time.Second).Dial("tcp4", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, perfMsgSize)
	for range count / 10 {
		if err := roundTrip(c, buf); err != nil {
			return err
		}
	}
	samples := make([]time.Duration, 0, count)
	for range count {
		start := time.Now()
		if err := roundTrip(c, buf); err != nil {
			return err
		}
		samples = append(samples, time.Since(start))
	}
	return printResult(summarize(samples))
}

// perfCRR: address, count. Each sample is connect, one 64-byte round trip
// and close (with RST, so no TIME_WAIT piles up).
func perfCRR(args []string) error {
	count, _ := strconv.Atoi(args[1])
	d := dialer(5 * time.Second)
	buf := make([]byte, perfMsgSize)
	one := func() error {
		c, err := d.Dial("tcp4", args[0])
		if err != nil {
			return err
		}
		c.(*net.TCPConn).SetLinger(0)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		err = roundTrip(c, buf)
		return errors.Join(err, c.Close())
	}
	for range count / 10 {
		if err := one(); err != nil {
			return err
		}
	}
	samples := make([]time.Duration, 0, count)
	for range count {
		start := time.Now()
		if err := one(); err != nil {
			return err
		}
		samples = append(samples, time.Since(start))
	}
	return printResult(summarize(samples))
}

// perfBulk: address, bytes. Sends bytes on one connection and waits for the
// server's acknowledgement of the last one.
func perfBulk(args []string) error {
	total, _ := strconv.ParseInt(args[1], 10, 64)
	c, err := dialer(5*time.Second).Dial("tcp4", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, 256<<10)
	start := time.Now()
	for sent := int64(0); sent < total; {
		n, err := c.Write(buf[:min(int64(len(buf)), total-sent)])
		if err != nil {
			return err
		}
		sent += int64(n)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, buf[:1]); err != nil {
		return fmt.Errorf("acknowledgement: %w", err)
	}
	el := time.Since(start)
	return printResult(perfResult{N: 1, Gbit: float64(total) * 8 / el.Seconds() / 1e9})
}

// splice: service address, backend address. A stand-in for the node proxy:
// it listens on 0.0.0.0:15001, reads SO_ORIGINAL_DST (answered by the
// cgroup/getsockopt program or by netfilter NAT) and, if it is the service,
// splices the connection to the backend.
func splice(args []string) error {
	svc, backend := args[0], args[1]
	l, err := listen(fmt.Sprintf("0.0.0.0:%d", bpf.ProxyOutboundPort))
	if err != nil {
		return err
	}
	fmt.Println("ready")
	d := dialer(5 * time.Second)
	acceptLoop(l, func(c net.Conn) {
		orig, err := bpf.OriginalDst(c.(*net.TCPConn))
		if err != nil || orig.String() != svc {
			fmt.Fprintf(stderr(), "splice: original destination %v (%v), want %s\n", orig, err, svc)
			return
		}
		up, err := d.Dial("tcp4", backend)
		if err != nil {
			return
		}
		defer up.Close()
		pipe(c, up)
	})
	return nil
}

// pipe copies both ways between a client and its upstream until both are
// done, passing the client's end of stream on.
func pipe(c, up net.Conn) {
	done := make(chan struct{})
	go func() {
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	<-done
}

func stdout() io.Writer { return os.Stdout }
func stderr() io.Writer { return os.Stderr }
