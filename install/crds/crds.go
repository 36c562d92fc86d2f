// Package crds holds nodemesh's CustomResourceDefinitions, embedded so the
// installer and tests apply exactly the committed files.
package crds

import "embed"

// FS holds every *.yaml file of this directory.
//
//go:embed *.yaml
var FS embed.FS

// All returns every CRD as one multi-document YAML stream.
func All() []byte {
	ents, _ := FS.ReadDir(".")
	var out []byte
	for _, e := range ents {
		data, _ := FS.ReadFile(e.Name())
		out = append(out, []byte("---\n")...)
		out = append(out, data...)
	}
	return out
}
