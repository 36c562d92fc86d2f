package install

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"

	"github.com/nodemesh/nodemesh/install/crds"
	"github.com/nodemesh/nodemesh/internal/golden"
)

// lintValues are value sets that switch the chart's conditional parts.
var lintValues = map[string]map[string]any{
	"defaults": nil,
	"private registry, no PDB": {
		"global": map[string]any{"imageRegistry": "registry.example.com", "imagePullSecrets": []any{"regcred"}},
		"controller": map[string]any{"replicas": 2, "podDisruptionBudget": map[string]any{"enabled": false}, "podAnnotations": map[string]any{"a": "b"},
			"goMemLimit": "250MiB"},
	},
}

// TestLint runs Helm's linter (what 'helm lint --strict' runs) on the chart
// directory: the files that are embedded and that plain helm installs.
func TestLint(t *testing.T) {
	kv, err := chartutil.ParseKubeVersion(DefaultKubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for name, vals := range lintValues {
		t.Run(name, func(t *testing.T) {
			l := action.NewLint()
			l.Strict = true
			l.KubeVersion = kv
			l.Namespace = DefaultNamespace
			res := l.Run([]string{ChartDir}, vals)
			for _, m := range res.Messages {
				// INFO messages (e.g. "icon is recommended") are advice.
				if m.Severity > support.InfoSev {
					t.Errorf("lint: %s", m)
				}
			}
			for _, err := range res.Errors {
				t.Errorf("lint error: %v", err)
			}
		})
	}
}

// helmTemplate is 'helm template nodemesh install/chart -n nodemesh-system
// --include-crds --kube-version DefaultKubeVersion', written the way Helm's
// own command is (cmd/helm/template.go), on the chart read from disk.
func helmTemplate(t *testing.T, vals map[string]any) string {
	t.Helper()
	c, err := loader.Load(ChartDir)
	if err != nil {
		t.Fatal(err)
	}
	client := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	kv, err := chartutil.ParseKubeVersion(DefaultKubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	client.KubeVersion = kv
	client.DryRunOption = "true"
	client.DryRun = true
	client.ReleaseName = DefaultReleaseName
	client.Namespace = DefaultNamespace
	client.Replace = true
	client.ClientOnly = true
	client.IncludeCRDs = true
	if vals == nil {
		vals = map[string]any{}
	}
	rel, err := client.Run(c, vals)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.WriteString(strings.TrimSpace(rel.Manifest) + "\n")
	for _, m := range rel.Hooks {
		out.WriteString("---\n# Source: " + m.Path + "\n" + m.Manifest + "\n")
	}
	return out.String()
}

// TestDryRunGolden: the rendering of the embedded chart with default values
// is the committed file, and equals helm template of the chart directory.
func TestDryRunGolden(t *testing.T) {
	for name, vals := range lintValues {
		t.Run(name, func(t *testing.T) {
			c, err := Chart()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Render(c, RenderOptions{Values: vals})
			if err != nil {
				t.Fatal(err)
			}
			if want := helmTemplate(t, vals); got != want {
				t.Errorf("Render differs from helm template of %s:\n%s", ChartDir, golden.Diff(want, got))
			}
			if name == "defaults" {
				golden.Check(t, filepath.Join("testdata", "dry-run.yaml"), []byte(got))
			}
			objs := decodeAll(t, got)
			// The controller's soft memory limit is set exactly when asked.
			want := ""
			if c, ok := vals["controller"].(map[string]any); ok {
				want, _ = c["goMemLimit"].(string)
			}
			for _, o := range objs {
				if d, ok := o.(*appsv1.Deployment); ok && d.Name == "nodemesh-controller" {
					have := ""
					for _, e := range d.Spec.Template.Spec.Containers[0].Env {
						if e.Name == "GOMEMLIMIT" {
							have = e.Value
						}
					}
					if have != want {
						t.Errorf("controller GOMEMLIMIT %q, want %q", have, want)
					}
				}
			}
		})
	}
}

// decodeAll decodes every rendered document strictly into its Go type, so
// a misspelt field in a template fails here rather than at install time.
func decodeAll(t *testing.T, manifest string) []runtime.Object {
	t.Helper()
	sch := runtime.NewScheme()
	if err := scheme.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	if err := apiextv1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	ser := json.NewSerializerWithOptions(json.DefaultMetaFactory, sch, sch, json.SerializerOptions{Yaml: true, Strict: true})
	r := utilyaml.NewYAMLReader(bufioReader(manifest))
	var objs []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := ser.Decode(doc, nil, nil)
		if err != nil {
			t.Errorf("decode:\n%s\n: %v", doc, err)
			continue
		}
		objs = append(objs, obj)
	}
	return objs
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// TestEmbeddedChartIsTheDirectory: the binary carries exactly chart/.
func TestEmbeddedChartIsTheDirectory(t *testing.T) {
	emb, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	disk, err := loader.Load(ChartDir)
	if err != nil {
		t.Fatal(err)
	}
	if emb.Metadata.Version != disk.Metadata.Version || len(emb.Templates) != len(disk.Templates) || len(emb.Files) != len(disk.Files) || !bytes.Equal(emb.Schema, disk.Schema) {
		t.Errorf("embedded chart differs from %s", ChartDir)
	}
	want, err := os.ReadFile(filepath.Join(ChartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range emb.Raw {
		if f.Name == "values.yaml" && !bytes.Equal(f.Data, want) {
			t.Error("embedded values.yaml differs")
		}
	}
}

// TestLeastPrivilege pins what each component may do: no wildcards, no
// Secrets, writes limited to Events, Identities and — in the release
// namespace only — the identity-collection Lease, and the node Envoy
// without any API access.
func TestLeastPrivilege(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(c, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writes := map[string]bool{"create": true, "update": true, "patch": true, "delete": true, "deletecollection": true, "escalate": true, "bind": true, "impersonate": true}
	allowedWrites := map[string]bool{"events": true, "identities": true}
	bound := map[string]bool{}
	for _, obj := range decodeAll(t, out) {
		var rules []rbacv1.PolicyRule
		var name string
		namespaced := false
		switch o := obj.(type) {
		case *rbacv1.ClusterRole:
			rules, name = o.Rules, o.Name
		case *rbacv1.Role:
			rules, name, namespaced = o.Rules, o.Name, true
		case *rbacv1.ClusterRoleBinding:
			for _, s := range o.Subjects {
				bound[s.Name] = true
			}
		case *rbacv1.RoleBinding:
			for _, s := range o.Subjects {
				bound[s.Name] = true
			}
		}
		for _, r := range rules {
			for _, res := range r.Resources {
				if res == "*" || res == "secrets" {
					t.Errorf("%s may access %q", name, res)
				}
				for _, v := range r.Verbs {
					if v == "*" {
						t.Errorf("%s has verb *", name)
					}
					// Leader election: create any Lease (the API cannot name
					// one on create), update only the collection's.
					lease := res == "leases" && namespaced && (v == "create" ||
						v == "update" && len(r.ResourceNames) == 1 && r.ResourceNames[0] == "nodemesh-identity-gc")
					if writes[v] && !allowedWrites[res] && !lease {
						t.Errorf("%s may %s %s", name, v, res)
					}
				}
			}
			for _, g := range r.APIGroups {
				if g == "*" {
					t.Errorf("%s has API group *", name)
				}
			}
		}
	}
	if !bound[ControllerName] || !bound[AgentName] {
		t.Errorf("controller and agent must be bound to their roles: %v", bound)
	}
	if bound[EnvoyName] {
		t.Error("the node Envoy must have no RBAC binding")
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

// The chart installs the CRDs the agent is written and tested against
// (install/crds, which the agent's tests apply): the same bytes.
func TestCRDsAreTheAgents(t *testing.T) {
	ents, err := crds.FS.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		want, _ := crds.FS.ReadFile(e.Name())
		got, err := os.ReadFile(filepath.Join("chart", "crds", e.Name()))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("chart/crds/%s differs from install/crds/%s (copy it over): %v", e.Name(), e.Name(), err)
		}
	}
}

// TestNodeEnvoyCapabilities pins what the node Envoy may do to the host: no
// privilege, one capability — NET_ADMIN, for the transparent upstream
// sockets of original_src (datapath.md, "The node proxy hop").
func TestNodeEnvoyCapabilities(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(c, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, obj := range decodeAll(t, out) {
		ds, ok := obj.(*appsv1.DaemonSet)
		if !ok || ds.Name != EnvoyName {
			continue
		}
		for _, ctr := range ds.Spec.Template.Spec.Containers {
			if ctr.Name != "envoy" {
				continue
			}
			found = true
			sc := ctr.SecurityContext
			if sc == nil || sc.Capabilities == nil {
				t.Fatal("the envoy container has no security context")
			}
			if sc.Privileged != nil && *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("the envoy container may be or become privileged: %+v", sc)
			}
			if got := sc.Capabilities.Add; len(got) != 1 || got[0] != "NET_ADMIN" {
				t.Errorf("capabilities added: %v, want [NET_ADMIN]", got)
			}
			if got := sc.Capabilities.Drop; len(got) != 1 || got[0] != "ALL" {
				t.Errorf("capabilities dropped: %v, want [ALL]", got)
			}
		}
	}
	if !found {
		t.Fatal("no envoy container in the node Envoy DaemonSet")
	}
}
