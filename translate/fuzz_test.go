package translate

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/input"
)

// FuzzTranslate feeds arbitrary manifests through decoding and translation.
// Whatever the input, nothing panics, what is emitted validates, and it
// renders. Seeds are the golden inputs.
//
//	go test -run '^$' -fuzz FuzzTranslate -fuzztime 60s -fuzzminimizetime 200x ./translate/
//
// Minimising each new input for a fixed number of runs keeps the fuzzer
// moving: the default (up to a minute per input) stalls it on this code's
// large coverage surface.
func FuzzTranslate(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.in.yaml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: List, items: [{}]}]\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("---\n--- # c\n...\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l := input.NewLoader("default")
		l.LoadBytes("fuzz.yaml", data)
		res := Translate(l.Bag(), l.Diagnostics(), Options{})
		if problems := envoy.Validate(res.XDS); len(problems) > 0 {
			t.Fatalf("emitted invalid xDS: %v", problems)
		}
		var b bytes.Buffer
		if err := WriteYAML(&b, res, false); err != nil {
			t.Fatalf("render: %v", err)
		}
		if err := WriteSummary(&b, res); err != nil {
			t.Fatalf("summary: %v", err)
		}
	})
}
