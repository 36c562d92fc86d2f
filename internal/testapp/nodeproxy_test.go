//go:build linux

package testapp

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestProxyRecord: what the stand-in serves is what a reader of its record
// gets back, and failures are counted by reason.
func TestProxyRecord(t *testing.T) {
	st := &proxyStats{conns: map[[2]string]int{}, fails: map[string]int{}}
	st.carried("10.244.0.7", "10.96.0.20:8080")
	st.carried("10.244.0.7", "10.96.0.20:8080")
	st.carried("10.244.1.9", "10.244.0.5:9080")
	st.failed("upstream-connect")
	rec := httptest.NewRecorder()
	st.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/stats/prometheus", nil))
	got := proxyRecord(rec.Body.String())
	want := map[string]int{"10.244.0.7 → 10.96.0.20:8080": 2, "10.244.1.9 → 10.244.0.5:9080": 1}
	if len(got) != len(want) {
		t.Fatalf("record %v, want %v\n%s", got, want, rec.Body)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %d, want %d", k, got[k], v)
		}
	}
	if !strings.Contains(rec.Body.String(), `nodemesh_standin_proxy_failures_total{reason="upstream-connect"} 1`) {
		t.Errorf("failure not counted:\n%s", rec.Body)
	}
}

// TestNodeProxyRefusesUnredirected: a connection that did not come through
// the redirect has no original destination; the stand-in closes it and
// counts it, and never connects anywhere (it is not an open relay).
func TestNodeProxyRefusesUnredirected(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st := &proxyStats{conns: map[[2]string]int{}, fails: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		carry(c.(*net.TCPConn), time.Second, st, io.Discard)
	}()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || n > 0 {
		t.Fatalf("read %d bytes, %v: want the connection closed", n, err)
	}
	<-done
	if st.fails["no-original-destination"] != 1 || len(st.conns) != 0 {
		t.Fatalf("fails %v, conns %v", st.fails, st.conns)
	}
}

// TestNodeProxyCommand: the subcommand is listed and takes its flags.
func TestNodeProxyCommand(t *testing.T) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if code := Main(ctx, []string{"node-proxy", "--listen", "127.0.0.1:0", "--stats", "127.0.0.1:0"}, &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	usage(&out)
	if !strings.Contains(out.String(), "node-proxy") {
		t.Errorf("usage does not list node-proxy:\n%s", out.String())
	}
}
