package testapp

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMainCommandLine: exit codes and messages of the command line.
func TestMainCommandLine(t *testing.T) {
	cases := map[string]struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		"no command":        {args: nil, code: 2, stderr: "Commands:"},
		"help":              {args: []string{"--help"}, code: 0, stderr: "netexec"},
		"unknown command":   {args: []string{"shell"}, code: 2, stderr: `unknown command "shell"`},
		"version":           {args: []string{"version"}, code: 0, stdout: "nodemesh-testapp dev\n"},
		"netexec help":      {args: []string{"netexec", "--help"}, code: 0, stderr: "/hostname"},
		"netexec bad port":  {args: []string{"netexec", "--http-port=70000"}, code: 2, stderr: "--http-port 70000: not a port"},
		"netexec bad flag":  {args: []string{"netexec", "--htp-port=1"}, code: 2, stderr: "flag provided but not defined: -htp-port"},
		"netexec extra arg": {args: []string{"netexec", "now"}, code: 2, stderr: "unexpected arguments now"},
		"chain no name":     {args: []string{"chain"}, code: 2, stderr: "--name is required"},
		"chain bad url":     {args: []string{"chain", "--name=p", "--upstream=details:9080"}, code: 2, stderr: `"details:9080": want an http:// or https:// URL`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), tc.args, &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, errb.String())
			}
			if tc.stdout != "" && out.String() != tc.stdout {
				t.Errorf("stdout %q, want %q", out.String(), tc.stdout)
			}
			if !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stderr %q, want it to contain %q", errb.String(), tc.stderr)
			}
		})
	}
}

// TestMainServes: 'netexec' and 'chain' serve until their context ends
// (SIGTERM in the binary), then exit 0.
func TestMainServes(t *testing.T) {
	for name, args := range map[string][]string{
		"netexec": {"netexec", "--udp-port=-1"},
		"chain":   {"chain", "--name=ratings", "--version=v3"},
	} {
		t.Run(name, func(t *testing.T) {
			port := freePort(t)
			flag := "--http-port="
			if name == "chain" {
				flag = "--port="
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan int, 1)
			go func() {
				done <- Main(ctx, append(args, flag+strconv.Itoa(port)), io.Discard, io.Discard)
			}()
			url := "http://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
			for {
				resp, err := http.Get(url)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Errorf("healthz: %d", resp.StatusCode)
					}
					break
				}
				select {
				case code := <-done:
					t.Fatalf("exited with %d before serving", code)
				case <-time.After(10 * time.Millisecond):
				}
			}
			cancel()
			if code := <-done; code != 0 {
				t.Errorf("exit %d after the context ended, want 0", code)
			}
		})
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
