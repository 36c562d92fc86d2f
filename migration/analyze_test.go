package migration

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
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

// TestPlanGolden renders the bookinfo sample's plan, as `migrate plan -n
// bookinfo -f samples/bookinfo` does.
func TestPlanGolden(t *testing.T) {
	inv, err := LoadFiles([]string{"../samples/bookinfo"}, nil, "default")
	if err != nil {
		t.Fatal(err)
	}
	p, err := MakePlan(inv, Analyze(inv, Options{}), "bookinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"table", "json"} {
		var b bytes.Buffer
		if err := p.Write(&b, format); err != nil {
			t.Fatal(err)
		}
		golden.Check(t, "testdata/plan/bookinfo."+format, b.Bytes())
	}
	if _, err := MakePlan(inv, Analyze(inv, Options{}), "nope"); err == nil {
		t.Error("a plan for a namespace that is not in the input must fail")
	}
}

// TestParityReportsDifferences is the case built to have differences: a
// client scoped by a Sidecar resource, and a VirtualService exported to its
// own namespace only.
func TestParityReportsDifferences(t *testing.T) {
	inv, err := LoadFiles([]string{"testdata/parity"}, nil, "default")
	if err != nil {
		t.Fatal(err)
	}
	diffs := Parity(inv, Options{}, "web", map[string]string{"app": "frontend", "version": "v1"})
	var got []string
	for _, d := range diffs {
		if !d.ShortName {
			got = append(got, d.RouteConfig+" "+d.VirtualHost)
		}
	}
	want := []string{"8080 cart.shop.svc.cluster.local:8080"}
	if !slices.Equal(got, want) {
		t.Errorf("differences = %v, want %v (all: %+v)", got, want, diffs)
	}
	// A client of shop itself sees the exported VirtualService on its
	// sidecar too: no difference but short names.
	for _, d := range Parity(inv, Options{}, "shop", map[string]string{"app": "cart", "version": "v1"}) {
		if !d.ShortName {
			t.Errorf("unexpected difference for a shop client: %+v", d)
		}
	}
}
