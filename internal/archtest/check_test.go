package archtest

import (
	"strings"
	"testing"
)

// TestCheck runs the checker on a small hand-made graph, so that a checker
// that finds nothing cannot pass TestImportRules unnoticed.
func TestCheck(t *testing.T) {
	const m = "example.com/m"
	g := &graph{module: m, pkgs: map[string]*pkg{
		m + "/leaf":                   {ImportPath: m + "/leaf", Imports: []string{"fmt"}, Deps: []string{"fmt"}},
		m + "/mid":                    {ImportPath: m + "/mid", Imports: []string{m + "/leaf", "k8s.io/client-go/kubernetes"}, Deps: []string{"fmt", m + "/leaf", "k8s.io/client-go/kubernetes"}},
		m + "/top":                    {ImportPath: m + "/top", Imports: []string{m + "/mid"}, Deps: []string{"fmt", m + "/leaf", m + "/mid", "k8s.io/client-go/kubernetes"}},
		m + "/top/in":                 {ImportPath: m + "/top/in", Imports: []string{"fmt"}, Deps: []string{"fmt"}},
		"fmt":                         {ImportPath: "fmt", Standard: true},
		"k8s.io/client-go/kubernetes": {ImportPath: "k8s.io/client-go/kubernetes"},
	}}
	cases := map[string]struct {
		r       rule
		want    []string // substrings of the violations, in order
		matched int
	}{
		"transitive, with the chain": {r: rule{pkgs: []string{"top"}, forbid: []string{"k8s.io/..."}},
			want: []string{"top depends on k8s.io/client-go/kubernetes (top → mid → k8s.io/client-go/kubernetes)"}, matched: 1},
		"direct only":        {r: rule{pkgs: []string{"top"}, direct: true, forbid: []string{"k8s.io/..."}}, matched: 1},
		"subtree":            {r: rule{pkgs: []string{"top/..."}, forbid: []string{"leaf"}}, want: []string{"top depends on leaf"}, matched: 2},
		"skip":               {r: rule{pkgs: []string{"top/..."}, skip: []string{"top"}, forbid: []string{"leaf"}}, matched: 1},
		"allow":              {r: rule{pkgs: []string{"mid"}, direct: true, forbid: []string{"nodemesh/..."}, allow: []string{"leaf"}}, matched: 1},
		"whole module":       {r: rule{pkgs: []string{"nodemesh/..."}, direct: true, forbid: []string{"leaf"}}, want: []string{"mid imports leaf"}, matched: 4},
		"anything but std":   {r: rule{pkgs: []string{"leaf", "mid"}, direct: true, forbid: []string{"*"}, allow: []string{"std"}}, want: []string{"mid imports leaf", "mid imports k8s.io/client-go/kubernetes"}, matched: 2},
		"nothing at all":     {r: rule{pkgs: []string{"leaf"}, direct: true, forbid: []string{"*"}}, want: []string{"leaf imports fmt"}, matched: 1},
		"no package matches": {r: rule{pkgs: []string{"gone"}, forbid: []string{"*"}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, matched := g.check(tc.r)
			if matched != tc.matched {
				t.Errorf("matched %d packages, want %d", matched, tc.matched)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("violations:\n%s\nwant %d: %q", strings.Join(got, "\n"), len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("violation %q, want %q", got[i], tc.want[i])
				}
			}
		})
	}
}
