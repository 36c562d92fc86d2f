package translate

import (
	"io"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// Options tune a translation.
type Options struct {
	Istio istio.Options
	// Node, when set, translates for that node: the default class plus a
	// source class per group of the node's client pods (Pods with
	// spec.nodeName in opted-in namespaces).
	Node string
}

// Result is what a translation produced. XDS holds only valid resources;
// Diagnostics say what was left out and why.
type Result struct {
	IR          *ir.Model
	XDS         *envoy.Resources
	Diagnostics ir.Diagnostics
}

// HasErrors reports whether any diagnostic is an error.
func (r *Result) HasErrors() bool { return r.Diagnostics.HasErrors() }

// Translate runs Istio semantics and the Envoy back end over a bag of objects.
// decodeDiags are diagnostics from reading the bag (they are merged in).
func Translate(bag *input.Bag, decodeDiags ir.Diagnostics, opts Options) *Result {
	p := istio.Prepare(bag, opts.Istio)
	m := p.Base
	if opts.Node != "" {
		classes := p.NodeClasses(opts.Node)
		m = p.Node(classes)
	}
	diags := p.Diagnostics()
	if opts.Node != "" && len(m.SourceClasses) == 1 {
		diags.Infof(ir.CodeSourceSelector, ir.ResourceRef{Kind: "Node", Name: opts.Node}, "",
			"no client pod on this node: no Pod with spec.nodeName %q and an address, in a namespace labelled %s=%s, without an Istio sidecar; the node gets the default class only",
			opts.Node, istio.DataplaneModeLabel, istio.DataplaneModeValue)
	}
	xds, xdiags := envoy.Build(m)
	diags = append(diags, xdiags...)
	if bag != nil {
		bag.Locate(diags)
	}
	all := append(append(ir.Diagnostics{}, decodeDiags...), diags...)
	return &Result{IR: m, XDS: xds, Diagnostics: all.Sort()}
}

// Load reads manifests from files, directories and "-" (stdin). The error is
// for paths that cannot be read at all; problems inside files are diagnostics.
func Load(paths []string, stdin io.Reader, defaultNamespace string) (*input.Bag, ir.Diagnostics, error) {
	l := input.NewLoader(defaultNamespace)
	for _, p := range paths {
		var err error
		if p == "-" {
			err = l.LoadReader("<stdin>", stdin)
		} else {
			err = l.LoadPath(p)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	return l.Bag(), l.Diagnostics(), nil
}
