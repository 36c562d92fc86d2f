package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Execute(args, IO{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut})
	return code, out.String(), errOut.String()
}

const sample = "../../samples/bookinfo"

func TestTranslateExitCodes(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v9}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		args []string
		code int
		// stdout and stderr must contain these.
		out, err string
	}{
		"sample summary":          {[]string{"translate", "-f", sample}, ExitOK, "outbound|9080|v1|reviews.bookinfo.svc.cluster.local", ""},
		"error diagnostic":        {[]string{"translate", "-f", sample, "-f", bad, "-o", "yaml"}, ExitFindings, "listeners:", `subset "v9"`},
		"unknown output":          {[]string{"translate", "-f", sample, "-o", "table"}, ExitUsage, "", "unknown output format"},
		"unknown flag":            {[]string{"translate", "--frobnicate"}, ExitUsage, "", "unknown flag"},
		"no input":                {[]string{"translate"}, ExitUsage, "", "-f PATH is required"},
		"missing path":            {[]string{"translate", "-f", "does/not/exist.yaml"}, ExitUsage, "", "no such file"},
		"unknown command":         {[]string{"transmogrify"}, ExitUsage, "", "unknown command"},
		"positional args refused": {[]string{"translate", "-f", sample, "extra"}, ExitUsage, "", "unknown command"},
		"version":                 {[]string{"version"}, ExitOK, "nodemesh", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := run(t, "", tc.args...)
			if code != tc.code {
				t.Errorf("exit code = %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if !strings.Contains(out, tc.out) {
				t.Errorf("stdout lacks %q:\n%s", tc.out, out)
			}
			if !strings.Contains(errOut, tc.err) {
				t.Errorf("stderr lacks %q:\n%s", tc.err, errOut)
			}
		})
	}
}

func TestTranslateJSONDocument(t *testing.T) {
	code, out, _ := run(t, "", "translate", "-f", sample, "-o", "json")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"listeners", "routes", "clusters", "endpoints", "diagnostics"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("missing key %q", k)
		}
	}
	if len(doc) != 5 {
		t.Errorf("keys = %d, want 5", len(doc))
	}
	var clusters []map[string]any
	if err := json.Unmarshal(doc["clusters"], &clusters); err != nil {
		t.Fatal(err)
	}
	if len(clusters) != 12 {
		t.Errorf("clusters = %d, want 12 (4 Services, 6 subsets, Passthrough, BlackHole)", len(clusters))
	}
	// Identical runs give identical bytes.
	_, again, _ := run(t, "", "translate", "-f", sample, "-o", "json")
	if again != out {
		t.Error("output is not deterministic")
	}
}

func TestTranslateStdinAndIR(t *testing.T) {
	in := `apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, labels: {app: api}}
spec: {containers: [{name: api, image: api}]}
status: {podIP: 10.0.0.1}
`
	code, out, errOut := run(t, in, "translate", "-f", "-", "--ir", "-n", "shop")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"routeConfigs:", "api.shop.svc.cluster.local:80", "address: 10.0.0.1", "sourceClasses:"} {
		if !strings.Contains(out, want) {
			t.Errorf("IR lacks %q", want)
		}
	}
}
