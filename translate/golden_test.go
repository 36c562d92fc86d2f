package translate

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/internal/golden"
	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// goldenCase is testdata/<area>/<case>: its input is <case>.in.yaml, or the
// paths (relative to the repository root) listed in <case>.inputs, so that
// the project's samples are golden cases without being copied.
type goldenCase struct {
	area, name string
	inputs     []string
}

func goldenCases(t *testing.T) []goldenCase {
	t.Helper()
	var cases []goldenCase
	for _, pattern := range []string{"testdata/*/*.in.yaml", "testdata/*/*.inputs"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			area := filepath.Base(filepath.Dir(f))
			base := filepath.Base(f)
			c := goldenCase{area: area}
			if name, ok := strings.CutSuffix(base, ".in.yaml"); ok {
				c.name, c.inputs = name, []string{f}
			} else {
				c.name = strings.TrimSuffix(base, ".inputs")
				c.inputs = readInputs(t, f)
			}
			cases = append(cases, c)
		}
	}
	if len(cases) == 0 {
		t.Fatal("no golden cases found")
	}
	return cases
}

func readInputs(t *testing.T, f string) []string {
	t.Helper()
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, filepath.Join("..", line))
	}
	return out
}

// translateFiles runs the same code path as `nodemesh translate`.
func translateFiles(t testing.TB, inputs []string) *Result {
	t.Helper()
	return translateNode(t, inputs, "")
}

// translateNode is `nodemesh translate --node`.
func translateNode(t testing.TB, inputs []string, node string) *Result {
	t.Helper()
	bag, diags, err := Load(inputs, nil, "default")
	if err != nil {
		t.Fatal(err)
	}
	return Translate(bag, diags, Options{Node: node})
}

// nodesOf lists the nodes the inputs' Pods run on.
func nodesOf(t testing.TB, inputs []string) []string {
	bag, _, err := Load(inputs, nil, "default")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range bag.Pods {
		if p.NodeName != "" && !slices.Contains(out, p.NodeName) {
			out = append(out, p.NodeName)
		}
	}
	slices.Sort(out)
	return out
}

func render(t testing.TB, r *Result, irOnly bool) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteYAML(&b, r, irOnly); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestGolden translates every case and compares the IR and the xDS with the
// committed files. Cases in the "invalid" area must produce an error
// diagnostic; all others must not. Cases in the "nodes" area are translated
// for each node their Pods run on (translate --node), into
// <case>.<node>.{ir,xds}.yaml.
func TestGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		nodes := []string{""}
		if c.area == "nodes" {
			nodes = nodesOf(t, c.inputs)
		}
		for _, node := range nodes {
			name := c.name
			if node != "" {
				name += "." + node
			}
			t.Run(c.area+"/"+name, func(t *testing.T) { checkGolden(t, c, node, name) })
		}
	}
}

// goldenOptions are a case's options: the "registry-only" area is
// translated with outboundTrafficPolicy REGISTRY_ONLY.
func goldenOptions(area, node string) Options {
	opts := Options{Node: node}
	if area == "registry-only" {
		opts.Istio.OutboundTrafficPolicy = istio.RegistryOnly
	}
	return opts
}

func translateCase(t testing.TB, c goldenCase, node string) *Result {
	t.Helper()
	bag, diags, err := Load(c.inputs, nil, "default")
	if err != nil {
		t.Fatal(err)
	}
	return Translate(bag, diags, goldenOptions(c.area, node))
}

func checkGolden(t *testing.T, c goldenCase, node, name string) {
	res := translateCase(t, c, node)
	irOut, xdsOut := render(t, res, true), render(t, res, false)
	dir := filepath.Join("testdata", c.area)
	golden.Check(t, filepath.Join(dir, name+".ir.yaml"), irOut)
	golden.Check(t, filepath.Join(dir, name+".xds.yaml"), xdsOut)

	if c.area == "invalid" && !res.HasErrors() {
		t.Errorf("an invalid case must produce an error diagnostic")
	}
	if c.area != "invalid" && res.HasErrors() {
		for _, d := range res.Diagnostics {
			t.Log(d)
		}
		t.Errorf("unexpected error diagnostics")
	}
	if problems := envoy.Validate(res.XDS); len(problems) > 0 {
		t.Errorf("emitted xDS does not validate: %v", problems)
	}
	// Identical runs give identical bytes.
	again := translateCase(t, c, node)
	if !bytes.Equal(render(t, again, false), xdsOut) || !bytes.Equal(render(t, again, true), irOut) {
		t.Errorf("translation is not deterministic")
	}
}
