package migration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInventoryDecodesLikeTheTranslator: the kinds only migration reads go
// through the translator's decoder (translate/input), with its strict
// diagnostics and file:line: a Deployment with a field its schema does not
// have is reported where it is and is not taken for a workload; the valid
// one is.
func TestInventoryDecodesLikeTheTranslator(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shop.yaml")
	if err := os.WriteFile(path, []byte(`apiVersion: apps/v1
kind: Deployment
metadata: {name: good, namespace: shop}
spec:
  selector: {matchLabels: {app: good}}
  template:
    metadata: {labels: {app: good}}
    spec: {containers: [{name: app, image: app:1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: typo, namespace: shop}
spec:
  selector: {matchLabels: {app: typo}}
  template:
    metadata: {labels: {app: typo}}
    spec: {containers: [{name: app, image: app:1}], serviceAcount: app}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := LoadFiles([]string{path}, nil, "default")
	if err != nil {
		t.Fatal(err)
	}
	var workloads []string
	for _, w := range inv.Workloads {
		workloads = append(workloads, w.Ref.Name)
	}
	if got := strings.Join(workloads, ","); got != "good" {
		t.Errorf("workloads = %s, want good (typo does not decode)", got)
	}
	found := false
	for _, d := range inv.Diagnostics {
		if d.Code == "UnknownField" && d.Resource.Name == "typo" {
			found = true
			if d.File != path || d.Line != 17 || d.Field != "spec.template.spec.serviceAcount" {
				t.Errorf("diagnostic at %s:%d %s, want %s:17 spec.template.spec.serviceAcount", d.File, d.Line, d.Field, path)
			}
		}
	}
	if !found {
		t.Errorf("no UnknownField diagnostic for the mistyped Deployment: %v", inv.Diagnostics)
	}
}
