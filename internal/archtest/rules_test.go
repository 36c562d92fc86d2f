package archtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// rule is one constraint on the import graph.
//
// Patterns: "translate/ir" is a package of this module and "xds/..." one with
// everything under it; "nodemesh/..." is the whole module; a pattern whose
// first element has a dot ("k8s.io/client-go/...") is another module's
// package; "std" is any standard-library package and "*" any package at all.
type rule struct {
	// pkgs are the module's packages the rule is about, less skip.
	pkgs, skip []string
	// direct: the rule is about the packages' own imports. Otherwise it is
	// about everything they depend on, transitively: what gets linked.
	direct bool
	// forbid is what they must not import (or depend on), less allow.
	forbid, allow []string
	// pending, when set, says why the rule does not hold yet and what makes
	// it hold. The rule is then reported and skipped while it is broken,
	// and fails once it holds, so that the mark is removed.
	pending string
}

// rules are nodemesh's import rules: docs/architecture.md ("Layout and
// import direction") shows the same table, and each package's doc comment
// says what it may import.
var rules = map[string]rule{
	// The contract leaf.
	"api imports nothing": {
		pkgs: []string{"api"}, direct: true, forbid: []string{"*"},
	},
	"api/... imports nothing of nodemesh outside api": {
		pkgs: []string{"api/..."}, forbid: []string{"nodemesh/..."}, allow: []string{"api/..."},
	},
	"api/... builds on apimachinery only": {
		pkgs: []string{"api/..."}, direct: true, forbid: []string{"*"},
		allow: []string{"std", "k8s.io/apimachinery/...", "api/..."},
	},

	// The translator.
	"translate/ir is plain data": {
		pkgs:   []string{"translate/ir"},
		forbid: []string{"nodemesh/...", "istio.io/...", "github.com/envoyproxy/...", "k8s.io/...", "sigs.k8s.io/...", "google.golang.org/..."},
		allow:  []string{"translate/ir", "api"},
	},
	"translate is a library below the controller, the agent and the installer": {
		pkgs:   []string{"translate/..."},
		forbid: []string{"xds/...", "agent/...", "bpf/...", "install/...", "migration/...", "internal/cli/...", "internal/installcli/...", "internal/agentcli/...", "k8s.io/client-go/...", "helm.sh/..."},
	},
	"translate/authz is the AuthorizationPolicy translation the agent shares": {
		pkgs: []string{"translate/authz"},
		forbid: []string{"nodemesh/...", "github.com/envoyproxy/...", "istio.io/client-go/pkg/clientset/...", "istio.io/client-go/pkg/informers/...",
			"istio.io/client-go/pkg/listers/...", "google.golang.org/grpc/..."},
		allow: []string{"translate/authz", "translate/ir", "api"},
	},
	"translate/input decodes, it does not translate": {
		pkgs: []string{"translate/input"}, forbid: []string{"translate/istio", "translate/envoy", "github.com/envoyproxy/..."},
	},
	"translate/istio never builds Envoy configuration": {
		pkgs: []string{"translate/istio"}, forbid: []string{"translate/envoy", "github.com/envoyproxy/..."},
	},
	"translate/envoy never reads Istio types": {
		pkgs: []string{"translate/envoy"}, forbid: []string{"translate/istio", "translate/input", "istio.io/..."},
	},

	// The controller.
	"xds reaches the translator only through its facade": {
		pkgs: []string{"xds/..."}, direct: true,
		forbid: []string{"translate/..."}, allow: []string{"translate", "translate/ir"},
	},
	"xds never imports the agent or the installer": {
		pkgs: []string{"xds/..."}, forbid: []string{"agent/...", "bpf/...", "install/...", "helm.sh/..."},
	},

	// The datapath.
	"bpf knows nothing of Kubernetes": {
		pkgs:   []string{"bpf/..."},
		forbid: []string{"k8s.io/...", "sigs.k8s.io/...", "helm.sh/...", "github.com/envoyproxy/...", "istio.io/...", "nodemesh/..."},
		allow:  []string{"bpf/...", "api"},
	},
	"the agent needs neither the translator nor the xDS server": {
		pkgs: []string{"agent/..."},
		forbid: []string{"xds/...", "translate/...", "install/...", "migration/...", "internal/cli/...", "internal/installcli/...",
			"helm.sh/...", "github.com/envoyproxy/...", "istio.io/..."},
		// The AuthorizationPolicy translation and Istio's API types it
		// reads: the agent enforces the policies' L4 part itself.
		allow: []string{"translate/ir", "translate/authz", "istio.io/api/...", "istio.io/client-go/pkg/apis/..."},
	},
	"the CNI plugin imports only the CNI library": {
		pkgs: []string{"agent/cni"}, direct: true, forbid: []string{"*"},
		allow: []string{"std", "github.com/containernetworking/cni/..."},
	},

	// The installer and the migration toolkit.
	"install never imports the agent, the xDS server or a command line": {
		pkgs:   []string{"install/..."},
		forbid: []string{"agent/...", "bpf/...", "xds/...", "cmd/...", "internal/cli/...", "internal/installcli/...", "internal/agentcli/..."},
	},
	"migration uses neither Helm nor go-control-plane itself": {
		pkgs: []string{"migration/..."}, direct: true,
		forbid: []string{"helm.sh/...", "github.com/envoyproxy/...", "xds/...", "agent/...", "bpf/...", "install/...", "cmd/..."},
	},

	// What each binary links.
	"nodemesh-agent links no translator, xDS server, Helm or go-control-plane": {
		pkgs:   []string{"cmd/nodemesh-agent"},
		forbid: []string{"translate/...", "xds/...", "install/...", "migration/...", "helm.sh/...", "github.com/envoyproxy/..."},
		allow:  []string{"translate/ir", "translate/authz"},
	},
	"nodemesh-controller links no Helm and no datapath": {
		pkgs:   []string{"cmd/nodemesh-controller"},
		forbid: []string{"helm.sh/...", "install/...", "internal/installcli/...", "agent/...", "bpf/..."},
	},
	"nodemesh-cni links no Kubernetes client and no eBPF": {
		pkgs:   []string{"cmd/nodemesh-cni"},
		forbid: []string{"k8s.io/...", "github.com/cilium/ebpf/...", "nodemesh/..."},
		allow:  []string{"cmd/nodemesh-cni", "agent/cni"},
	},

	"nodemesh-testapp links only the standard library": {
		pkgs:   []string{"cmd/nodemesh-testapp"},
		forbid: []string{"*"},
		allow:  []string{"std", "cmd/nodemesh-testapp", "internal/testapp"},
	},

	// Tooling.
	"no nodemesh binary links the image builder": {
		pkgs: []string{"nodemesh/..."}, skip: []string{"internal/images/...", "hack/..."},
		forbid: []string{"internal/images/..."},
	},
	"product code never imports the test environment": {
		pkgs: []string{"nodemesh/..."}, skip: []string{"internal/kubetest/...", "hack/..."},
		forbid: []string{"internal/kubetest/..."},
	},
}

// TestImportRules checks every rule against the module's import graph.
func TestImportRules(t *testing.T) {
	g, err := loadGraph()
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range rules {
		t.Run(name, func(t *testing.T) {
			violations, matched := g.check(r)
			if matched == 0 {
				t.Fatalf("no package matches %v: the rule is stale", r.pkgs)
			}
			switch {
			case r.pending != "" && len(violations) > 0:
				t.Skipf("pending: %s\n%s", r.pending, strings.Join(violations, "\n"))
			case r.pending != "":
				t.Errorf("the rule holds now: remove its pending mark (%s)", r.pending)
			case len(violations) > 0:
				t.Errorf("%d imports break the rule:\n%s", len(violations), strings.Join(violations, "\n"))
			}
		})
	}
}

// check returns the rule's violations and how many packages it applies to.
func (g *graph) check(r rule) (violations []string, matched int) {
	own := g.own()
	slices.Sort(own)
	for _, path := range own {
		if !g.matchAny(r.pkgs, path) || g.matchAny(r.skip, path) {
			continue
		}
		matched++
		p := g.pkgs[path]
		imports := p.Deps
		if r.direct {
			imports = p.Imports
		}
		var bad []string
		for _, imp := range imports {
			if g.matchAny(r.forbid, imp) && !g.matchAny(r.allow, imp) {
				bad = append(bad, imp)
			}
		}
		slices.Sort(bad)
		const show = 5
		for i, imp := range bad {
			if i == show {
				violations = append(violations, fmt.Sprintf("  … and %d more forbidden dependencies of %s", len(bad)-show, g.short(path)))
				break
			}
			if r.direct {
				violations = append(violations, fmt.Sprintf("  %s imports %s", g.short(path), g.short(imp)))
			} else {
				violations = append(violations, fmt.Sprintf("  %s depends on %s (%s)", g.short(path), g.short(imp), strings.Join(g.chain(path, imp), " → ")))
			}
		}
	}
	return violations, matched
}

// matchAny reports whether path matches one of the patterns.
func (g *graph) matchAny(patterns []string, path string) bool {
	for _, pat := range patterns {
		if g.match(pat, path) {
			return true
		}
	}
	return false
}

func (g *graph) match(pat, path string) bool {
	switch pat {
	case "*":
		return true
	case "std":
		p := g.pkgs[path]
		return p != nil && p.Standard
	case "nodemesh/...":
		return path == g.module || strings.HasPrefix(path, g.module+"/")
	}
	if first, _, _ := strings.Cut(pat, "/"); !strings.Contains(first, ".") {
		pat = g.module + "/" + pat
	}
	if base, ok := strings.CutSuffix(pat, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pat
}

// chain is a shortest import path from one package to another.
func (g *graph) chain(from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var out []string
			for p := to; p != ""; p = prev[p] {
				out = append([]string{g.short(p)}, out...)
			}
			return out
		}
		if p := g.pkgs[cur]; p != nil {
			for _, imp := range p.Imports {
				if _, seen := prev[imp]; !seen {
					prev[imp] = cur
					queue = append(queue, imp)
				}
			}
		}
	}
	return []string{g.short(from), "…", g.short(to)}
}

// short is a path without the module's prefix.
func (g *graph) short(path string) string {
	if s, ok := strings.CutPrefix(path, g.module+"/"); ok {
		return s
	}
	return path
}
