package translate

import (
	"io"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// Options tune a translation.
type Options struct {
	Istio IstioOptions
	// Authz are the options of the AuthorizationPolicy translation behind
	// the nodes' inbound listeners (the root namespace defaults to
	// Istio.RootNamespace).
	Authz AuthzOptions
	// JWKS fetches the key sets of RequestAuthentication rules without
	// inline jwks (the controller's xds/jwks resolver); nil: such rules
	// reject their issuer's tokens (deny more), as istiod does when it
	// cannot fetch.
	JWKS JWKSFunc
	// Node, when set, makes Translate translate for that node: the default
	// class plus a source class per group of the node's client pods (Pods
	// with spec.nodeName in opted-in namespaces). A Generation serves every
	// node and ignores it.
	Node string
}

// IstioOptions are the options of Istio's semantics (cluster domain, root
// namespace, per-proxy short names).
type IstioOptions = istio.Options

// Result is what a translation produced. XDS holds only valid resources;
// Diagnostics say what was left out and why.
type Result struct {
	IR          *ir.Model
	XDS         *Resources
	Diagnostics ir.Diagnostics
}

// HasErrors reports whether any diagnostic is an error.
func (r *Result) HasErrors() bool { return r.Diagnostics.HasErrors() }

// Translate translates a bag for the default class or, with opts.Node, for
// one node — what `nodemesh translate` prints and the golden files hold. It
// is a Generation's configuration of that node, assembled as the controller
// assembles what it serves the node. decodeDiags are diagnostics from
// reading the bag (they are merged in).
func Translate(bag *input.Bag, decodeDiags ir.Diagnostics, opts Options) *Result {
	g, shared := New(bag, decodeDiags, opts)
	if opts.Node == "" {
		return &Result{IR: g.Model(), XDS: shared, Diagnostics: g.Diagnostics()}
	}
	np, r := g.ForNode(opts.Node, shared)
	diags := g.Diagnostics()
	if len(np.Classes) == 1 {
		diags.Infof(ir.CodeSourceSelector, ir.ResourceRef{Kind: "Node", Name: opts.Node}, "",
			"no client pod on this node: no Pod with spec.nodeName %q and an address, in a namespace labelled %s=%s, without an Istio sidecar; the node gets the default class only",
			opts.Node, istio.DataplaneModeLabel, istio.DataplaneModeValue)
	}
	return &Result{IR: np.Model(), XDS: r, Diagnostics: diags.Sort()}
}

// Load reads manifests from files, directories and "-" (stdin). The error is
// for paths that cannot be read at all; problems inside files are diagnostics.
func Load(paths []string, stdin io.Reader, defaultNamespace string) (*Bag, ir.Diagnostics, error) {
	l := input.NewLoader(defaultNamespace)
	// AuthorizationPolicies (kept with the other kinds translation does not
	// read) decide the nodes' inbound listeners.
	l.KeepIgnored = true
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

// LoadBytes reads a (multi-document) YAML or JSON stream under a display
// name.
func LoadBytes(name string, data []byte, defaultNamespace string) (*Bag, ir.Diagnostics) {
	l := input.NewLoader(defaultNamespace)
	l.KeepIgnored = true
	l.LoadBytes(name, data)
	return l.Bag(), l.Diagnostics()
}
