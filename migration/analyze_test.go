package migration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/internal/golden"
)

// conformance is Istio's corpus, outside the repository (../shared).
const conformance = "../../shared/conformance"

// analyzeCases are the golden analyze reports: inputs relative to this
// directory, and whether they need ../shared.
var analyzeCases = []struct {
	name   string
	inputs []string
	shared bool
}{
	{name: "bookinfo", inputs: []string{"../samples/bookinfo"}},
	{name: "bookinfo-steps", inputs: []string{"../samples/bookinfo", "../samples/bookinfo-steps/reviews-jason-v2.yaml"}},
	{name: "parity", inputs: []string{"testdata/parity"}},
	{name: "policies", inputs: []string{"testdata/policies"}},
	{name: "istio-bookinfo", inputs: []string{conformance + "/istio-bookinfo/platform/kube/bookinfo.yaml", conformance + "/istio-bookinfo/networking"}, shared: true},
	{name: "istio-bookinfo-policies", inputs: []string{conformance + "/istio-bookinfo/platform/kube/bookinfo.yaml", conformance + "/istio-bookinfo/policy", conformance + "/istio-bookinfo/security"}, shared: true},
	{name: "istio-testdata-config", inputs: []string{conformance + "/istio-testdata-config"}, shared: true},
	{name: "istio-tasks", inputs: []string{conformance + "/istio-tasks"}, shared: true},
}

// TestAnalyzeGolden runs the same code path as `nodemesh migrate analyze -f`
// and compares the JSON and table reports with committed files.
func TestAnalyzeGolden(t *testing.T) {
	for _, c := range analyzeCases {
		t.Run(c.name, func(t *testing.T) {
			if c.shared {
				if _, err := os.Stat(conformance); err != nil {
					t.Skipf("skipping: %s not present (conformance data lives outside the repository)", conformance)
				}
			}
			for _, in := range c.inputs {
				if _, err := os.Stat(in); err != nil {
					t.Skipf("skipping: %v", err)
				}
			}
			inv, err := LoadFiles(c.inputs, nil, "default")
			if err != nil {
				t.Fatal(err)
			}
			r := Analyze(inv, Options{})
			for _, format := range []string{"json", "table"} {
				var b bytes.Buffer
				if err := r.Write(&b, format); err != nil {
					t.Fatal(err)
				}
				// Paths of ../shared differ by checkout; keep them relative.
				out := strings.ReplaceAll(b.String(), conformance, "$CONFORMANCE")
				golden.Check(t, filepath.Join("testdata/analyze", c.name+"."+format), []byte(out))
			}
		})
	}
}
