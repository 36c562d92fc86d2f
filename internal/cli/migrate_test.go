package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestMigrateAnalyzeContract checks the stable JSON contract of
// `migrate analyze -o json` on the bookinfo sample.
func TestMigrateAnalyzeContract(t *testing.T) {
	code, out, errOut := run(t, "", "migrate", "analyze", "-f", "../../samples/bookinfo", "-o", "json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var doc struct {
		Namespaces []struct {
			Name     string `json:"name"`
			Verdict  string `json:"verdict"`
			Findings []map[string]json.RawMessage
		} `json:"namespaces"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Namespaces) != 1 || doc.Namespaces[0].Name != "bookinfo" || doc.Namespaces[0].Verdict != "ready" {
		t.Fatalf("namespaces = %+v", doc.Namespaces)
	}
	for _, f := range doc.Namespaces[0].Findings {
		for _, k := range []string{"resource", "field", "level", "message", "fix"} {
			if _, ok := f[k]; !ok {
				t.Errorf("finding without %q: %v", k, f)
			}
		}
		var res map[string]string
		json.Unmarshal(f["resource"], &res)
		for _, k := range []string{"kind", "namespace", "name"} {
			if _, ok := res[k]; !ok {
				t.Errorf("resource without %q: %v", k, res)
			}
		}
	}
}

func TestMigrateCommands(t *testing.T) {
	for name, c := range map[string]struct {
		args []string
		code int
		want string
	}{
		"analyze table":       {[]string{"migrate", "analyze", "-f", "../../samples/bookinfo"}, ExitOK, "bookinfo: ready"},
		"analyze -n":          {[]string{"migrate", "analyze", "-f", "../../samples/bookinfo", "-n", "bookinfo", "-o", "yaml"}, ExitOK, "verdict: ready"},
		"analyze blocked":     {[]string{"migrate", "analyze", "-f", "../../migration/testdata/policies"}, ExitFindings, "store: blocked"},
		"analyze bad format":  {[]string{"migrate", "analyze", "-f", "../../samples/bookinfo", "-o", "xml"}, ExitUsage, `-o "xml"`},
		"plan":                {[]string{"migrate", "plan", "-n", "bookinfo", "-f", "../../samples/bookinfo"}, ExitOK, "restart Deployment/reviews-v3"},
		"plan json":           {[]string{"migrate", "plan", "-n", "bookinfo", "-f", "../../samples/bookinfo", "-o", "json"}, ExitOK, `"postCheck"`},
		"plan no namespace":   {[]string{"migrate", "plan", "-f", "../../samples/bookinfo"}, ExitUsage, "-n NAMESPACE is required"},
		"plan missing":        {[]string{"migrate", "plan", "-n", "nope", "-f", "../../samples/bookinfo"}, ExitFindings, "namespace not found"},
		"plan blocked":        {[]string{"migrate", "plan", "-n", "store", "-f", "../../migration/testdata/policies"}, ExitFindings, "BLOCKED"},
		"apply no namespace":  {[]string{"migrate", "apply"}, ExitUsage, "-n NAMESPACE is required"},
		"apply probe flags":   {[]string{"migrate", "apply", "--help"}, ExitOK, "--probe-image string"},
		"rollback no cluster": {[]string{"migrate", "rollback", "-n", "x", "--kubeconfig", "/nonexistent"}, ExitFindings, "kubeconfig"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := run(t, "", c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, out, errOut)
			}
			if !strings.Contains(out+errOut, c.want) {
				t.Errorf("output does not mention %q:\n%s%s", c.want, out, errOut)
			}
		})
	}
}
