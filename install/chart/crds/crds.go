// Package crds holds nodemesh's CustomResourceDefinitions: the chart's crds/
// directory, which Helm installs before the chart's templates. The YAML files
// are generated from the Go types in api/v1alpha1 by controller-gen (make
// generate; make check-generated fails when they differ) and are the only
// copy: the installer reads them from the embedded chart, plain helm from
// this directory, and tests through this package, so everything applies the
// same bytes.
//
// The Go files here are not part of the chart: .helmignore leaves them out
// of 'helm package', and install.Chart applies .helmignore too.
package crds

import (
	"bytes"
	"embed"
)

// FS holds every *.yaml file of this directory.
//
//go:embed *.yaml
var FS embed.FS

// All returns every CRD as one multi-document YAML stream.
func All() []byte {
	ents, _ := FS.ReadDir(".")
	var out bytes.Buffer
	for _, e := range ents {
		data, _ := FS.ReadFile(e.Name())
		if !bytes.HasPrefix(data, []byte("---\n")) {
			out.WriteString("---\n")
		}
		out.Write(data)
	}
	return out.Bytes()
}
