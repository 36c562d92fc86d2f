package cli

import (
	"strings"
	"testing"
)

// The mesh default exportTo flags reach the translator, and values the
// mesh config does not allow are usage errors.
func TestMeshExportToFlags(t *testing.T) {
	const v1 = "outbound|9080|v1|reviews.bookinfo.svc.cluster.local"
	tests := map[string]struct {
		args   []string
		code   int
		has    bool // stdout has bookinfo's reviews v1 cluster
		stderr string
	}{
		"unset": {[]string{"translate", "-f", sample}, ExitOK, true, ""},
		"star":  {[]string{"translate", "-f", sample, "--default-destination-rule-export-to=*"}, ExitOK, true, ""},
		// bookinfo's DestinationRules become private to bookinfo: the
		// default class (no namespace) no longer sees their subsets.
		"dot":                  {[]string{"translate", "-f", sample, "--default-destination-rule-export-to=."}, ExitFindings, false, ""},
		"a namespace":          {[]string{"translate", "-f", sample, "--default-service-export-to=shop"}, ExitUsage, false, "only . and * are allowed"},
		"both":                 {[]string{"translate", "-f", sample, "--default-virtual-service-export-to=.,*"}, ExitUsage, false, "one of . or *"},
		"controller validates": {[]string{"nodemesh-controller", "run", "--default-destination-rule-export-to=~"}, ExitUsage, false, "only . and * are allowed"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var code int
			var out, errOut string
			if tc.args[0] == "nodemesh-controller" {
				code, out, errOut = execController(t, tc.args[1:]...)
			} else {
				code, out, errOut = run(t, "", tc.args...)
			}
			if code != tc.code {
				t.Errorf("exit code = %d, want %d\nstderr: %s", code, tc.code, errOut)
			}
			if got := strings.Contains(out, v1); got != tc.has {
				t.Errorf("stdout has %s: %v, want %v", v1, got, tc.has)
			}
			if !strings.Contains(errOut, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, errOut)
			}
		})
	}
}
