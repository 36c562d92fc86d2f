package clibase

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// TestKlogThroughSlog: once a command has made its logger, what client-go
// logs through klog comes out in that logger's format, at its levels.
func TestKlogThroughSlog(t *testing.T) {
	t.Cleanup(klog.ClearLogger)
	var buf bytes.Buffer
	flags := LogFlags{Level: "info", Format: "json"}
	if _, err := flags.Logger(&buf); err != nil {
		t.Fatal(err)
	}
	klog.InfoS("watch started", "resource", "pods")
	klog.ErrorS(errors.New("connection refused"), "list failed")
	klog.V(4).InfoS("too verbose")
	var got []map[string]any
	for line := range strings.Lines(buf.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not the logger's JSON: %q", line)
		}
		got = append(got, rec)
	}
	if len(got) != 2 {
		t.Fatalf("%d records, want 2:\n%s", len(got), buf.String())
	}
	if got[0]["level"] != "INFO" || got[0]["msg"] != "watch started" || got[0]["resource"] != "pods" {
		t.Errorf("info record %v", got[0])
	}
	if got[1]["level"] != "ERROR" || got[1]["msg"] != "list failed" || got[1]["err"] != "connection refused" {
		t.Errorf("error record %v", got[1])
	}
}

// TestRoot: the conventions every binary's root command has.
func TestRoot(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		streams := IO{Out: &out, ErrOut: &errOut}
		root := NewRoot(streams, "nodemesh-test", "a test", "")
		root.AddCommand(
			&cobra.Command{Use: "fail", RunE: func(*cobra.Command, []string) error { return errors.New("node unreachable") }},
			&cobra.Command{Use: "findings", RunE: func(*cobra.Command, []string) error { return &ExitError{Code: ExitFindings} }},
			&cobra.Command{Use: "usage", RunE: func(*cobra.Command, []string) error { return UsageError("--x is required") }},
		)
		if len(args) > 0 && args[0] == "failures" {
			FailuresExit(root)
			args = args[1:]
		}
		return Execute(root, args, streams), out.String(), errOut.String()
	}
	cases := map[string]struct {
		args        []string
		code        int
		out, errOut string
	}{
		"version":                      {args: []string{"version"}, code: ExitOK, out: "nodemesh-test dev\n"},
		"unknown flag":                 {args: []string{"version", "--frob"}, code: ExitUsage, errOut: "Error: unknown flag: --frob (see 'nodemesh-test version --help')\n"},
		"unknown command":              {args: []string{"frob"}, code: ExitUsage, errOut: `Error: unknown command "frob" for "nodemesh-test"` + "\n"},
		"usage error":                  {args: []string{"usage"}, code: ExitUsage, errOut: "Error: --x is required\n"},
		"findings, nothing to print":   {args: []string{"findings"}, code: ExitFindings},
		"plain error":                  {args: []string{"fail"}, code: ExitUsage, errOut: "Error: node unreachable\n"},
		"plain error, failures exit":   {args: []string{"failures", "fail"}, code: ExitFindings, errOut: "Error: node unreachable\n"},
		"usage error, failures exit":   {args: []string{"failures", "usage"}, code: ExitUsage, errOut: "Error: --x is required\n"},
		"cobra's error, failures exit": {args: []string{"failures", "version", "x"}, code: ExitUsage, errOut: `Error: unknown command "x" for "nodemesh-test version"` + "\n"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := run(tc.args...)
			if code != tc.code || out != tc.out || errOut != tc.errOut {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, out, errOut, tc.code, tc.out, tc.errOut)
			}
		})
	}
	if UserAgent != "nodemesh-test/dev" {
		t.Errorf("User-Agent %q", UserAgent)
	}
}
