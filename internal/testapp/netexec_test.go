package testapp

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestNetexecHandler: the endpoints 'nodemesh check' uses (/hostname for the
// answering pod's name, with no newline: the check's loop adds one per
// request; /healthz for readiness) and the rest of agnhost's that are
// served; the dangerous ones are not.
func TestNetexecHandler(t *testing.T) {
	srv := httptest.NewServer(NetexecHandler("echo-same-node-7f9c"))
	defer srv.Close()
	cases := map[string]struct {
		path   string
		header http.Header
		code   int
		body   string // exact, or a prefix when it ends with "*"
	}{
		"hostname":              {path: "/hostname", code: 200, body: "echo-same-node-7f9c"},
		"healthz":               {path: "/healthz", code: 200, body: "ok"},
		"root":                  {path: "/", code: 200, body: "NOW: *"},
		"echo":                  {path: "/echo?msg=hello%20mesh", code: 200, body: "hello mesh"},
		"echo with a status":    {path: "/echo?msg=teapot&code=418", code: 418, body: "teapot"},
		"echo with a bad one":   {path: "/echo?code=99", code: 400, body: `code "99": want a status from 200 to 599`},
		"echo reflects as text": {path: "/echo?msg=%3Chtml%3E%3Cscript%3Ealert(1)%3C/script%3E", code: 200, body: "<html><script>alert(1)</script>"},
		"clientip":              {path: "/clientip", code: 200, body: "127.0.0.1:*"},
		"header":                {path: "/header?key=X-Nodemesh-Check", header: http.Header{"X-Nodemesh-Check": {"v2"}}, code: 200, body: "v2"},
		"no shell":              {path: "/shell?cmd=id", code: 404, body: "*"},
		"no dial":               {path: "/dial?host=10.0.0.1&port=80&request=hostname", code: 404, body: "*"},
		"no exit":               {path: "/exit?code=0", code: 404, body: "*"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code {
				t.Errorf("status %d, want %d (body %q)", resp.StatusCode, tc.code, b)
			}
			if prefix, ok := strings.CutSuffix(tc.body, "*"); ok {
				if !strings.HasPrefix(string(b), prefix) {
					t.Errorf("body %q, want it to start with %q", b, prefix)
				}
			} else if string(b) != tc.body {
				t.Errorf("body %q, want %q", b, tc.body)
			}
			if tc.code < 300 {
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
					t.Errorf("Content-Type %q: reflected input must be plain text", ct)
				}
			}
		})
	}
}

// TestServeUDP: netexec's UDP commands over a real socket; an unknown
// command gets no answer (the next datagram's answer is the next read).
func TestServeUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ServeUDP(pc, "echo-plain-1") }()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func(cmd string) string {
		t.Helper()
		if _, err := c.Write([]byte(cmd)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	if got := ask("hostname\n"); got != "echo-plain-1" {
		t.Errorf("hostname: %q", got)
	}
	if got := ask("echo over udp"); got != "over udp" {
		t.Errorf("echo: %q", got)
	}
	// No answer to "shell id": the answer read is clientip's.
	if _, err := c.Write([]byte("shell id")); err != nil {
		t.Fatal(err)
	}
	if got := ask("clientip"); got != c.LocalAddr().String() {
		t.Errorf("clientip after an unknown command: %q, want %q", got, c.LocalAddr())
	}
	pc.Close()
	if err := <-done; err != nil {
		t.Errorf("ServeUDP after close: %v", err)
	}
}

// TestStream: /stream sends one numbered line per 100 ms for the seconds
// asked, and refuses a duration out of range.
func TestStream(t *testing.T) {
	srv := httptest.NewServer(NetexecHandler("host"))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/stream?seconds=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	lines := strings.Fields(string(body))
	if resp.StatusCode != 200 || len(lines) != 10 || lines[9] != "10" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	for _, bad := range []string{"0", "601", "x"} {
		resp, err := http.Get(srv.URL + "/stream?seconds=" + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("seconds=%s: %d, want 400", bad, resp.StatusCode)
		}
	}
}
