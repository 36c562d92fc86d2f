package install

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	sigsyaml "sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/golden"
	"github.com/nodemesh/nodemesh/xds"
)

// lintValues are value sets that switch the chart's conditional parts.
var lintValues = map[string]map[string]any{
	"defaults": nil,
	"private registry, no PDB": {
		"global": map[string]any{"imageRegistry": "registry.example.com", "imagePullSecrets": []any{"regcred"}},
		"controller": map[string]any{"replicas": 2, "podDisruptionBudget": map[string]any{"enabled": false}, "podAnnotations": map[string]any{"a": "b"},
			"goMemLimit": "250MiB"},
	},
	"cert-manager TLS, no network policy": {
		"controller": map[string]any{"xds": map[string]any{"tls": map[string]any{"existingSecret": "controller-tls"}, "maxConnectionAge": "1h"},
			"networkPolicy": map[string]any{"enabled": false}},
		"envoy": map[string]any{"xdsTokenExpirationSeconds": 600},
	},
	"node CIDRs, Prometheus": {
		"controller": map[string]any{"networkPolicy": map[string]any{"hostCIDRs": []any{"10.0.0.0/16", "192.168.10.0/24"},
			"monitoringFrom": []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "monitoring"}}}}}},
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
			l.Namespace = api.DefaultNamespace
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
	client.ReleaseName = api.DefaultReleaseName
	client.Namespace = api.DefaultNamespace
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
		if bytes.Contains(doc, []byte("apiVersion: nodemesh.io/")) {
			// nodemesh's CRDs: not in client-go's scheme (the API server
			// validates them against the CRD in TestLifecycle).
			u := &unstructured.Unstructured{}
			if err := sigsyaml.Unmarshal(doc, &u.Object); err != nil {
				t.Errorf("decode:\n%s\n: %v", doc, err)
				continue
			}
			objs = append(objs, u)
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

// TestLeastPrivilege pins what each component may do: no wildcards; writes
// limited to Events, Identities, in the release namespace only the
// identity-collection Lease, and exactly the controller's CA objects by
// name (get and update the CA Secret the chart creates empty — the only
// Secret anyone may touch —, get and update the CA bundle ConfigMap);
// token and access reviews, which only ask; tokens of the debug
// ServiceAccount only through the unbound nodemesh-debug-client Role; and
// the node Envoy without any API access; agent and controller read
// AuthorizationPolicies only. With
// controller.xds.caBundleInAllNamespaces (the default) the controller may
// also create ConfigMaps anywhere (create cannot be named) and get, list,
// watch and update the bundle ConfigMap by name in every namespace.
func TestLeastPrivilege(t *testing.T) {
	out := renderDefault(t)
	writes := map[string]bool{"create": true, "update": true, "patch": true, "delete": true, "deletecollection": true, "escalate": true, "bind": true, "impersonate": true}
	allowedWrites := map[string]bool{"events": true, "identities": true}
	// Reviews create nothing: the API server answers and forgets.
	reviews := map[string]bool{"tokenreviews": true, "subjectaccessreviews": true}
	// Objects written by name only, in the release namespace only.
	byName := map[string]struct {
		name  string
		verbs map[string]bool
	}{
		"secrets":               {api.CASecret, map[string]bool{"get": true, "update": true}},
		"configmaps":            {api.CABundleConfigMap, map[string]bool{"get": true, "update": true, "list": true, "watch": true}},
		"serviceaccounts/token": {api.DebugServiceAccount, map[string]bool{"create": true}},
	}
	bound := map[string]bool{}
	roleBound := map[string][]string{} // role → subjects
	// security.istio.io verbs by role and resource.
	istioVerbs := map[string][]string{}
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
				roleBound[o.RoleRef.Name] = append(roleBound[o.RoleRef.Name], s.Name)
			}
		case *rbacv1.RoleBinding:
			for _, s := range o.Subjects {
				bound[s.Name] = true
				roleBound[o.RoleRef.Name] = append(roleBound[o.RoleRef.Name], s.Name)
			}
		}
		for _, r := range rules {
			if slices.Contains(r.APIGroups, "security.istio.io") {
				for _, res := range r.Resources {
					istioVerbs[name+" "+res] = append(istioVerbs[name+" "+res], r.Verbs...)
				}
			}
			for _, res := range r.Resources {
				if res == "*" {
					t.Errorf("%s may access %q", name, res)
				}
				bundleEverywhere := res == "configmaps" && !namespaced && name == api.ControllerName
				if bundleEverywhere && len(r.ResourceNames) == 0 && slices.Equal(r.Verbs, []string{"create"}) {
					continue
				}
				if n, ok := byName[res]; ok {
					// Secrets are pinned for any verb, the others for writes.
					pinned := res == "secrets"
					for _, v := range r.Verbs {
						pinned = pinned || writes[v]
					}
					if !pinned {
						continue
					}
					if (!namespaced && !bundleEverywhere) || len(r.ResourceNames) != 1 || r.ResourceNames[0] != n.name {
						t.Errorf("%s may access %s other than %s in the release namespace: %+v", name, res, n.name, r)
					}
					for _, v := range r.Verbs {
						if !n.verbs[v] {
							t.Errorf("%s may %s %s", name, v, res)
						}
					}
					continue
				}
				for _, v := range r.Verbs {
					if v == "*" {
						t.Errorf("%s has verb *", name)
					}
					// Leader election: create any Lease (the API cannot name
					// one on create), update only the collection's.
					lease := res == "leases" && namespaced && (v == "create" ||
						v == "update" && len(r.ResourceNames) == 1 && r.ResourceNames[0] == "nodemesh-identity-gc")
					review := reviews[res] && v == "create"
					if writes[v] && !allowedWrites[res] && !lease && !review {
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
	// The agent enforces AuthorizationPolicies' L4 part and
	// PeerAuthentication, and captures for the HTTP part and
	// RequestAuthentication: it reads them, never writes them. The controller
	// reports their status as Events and builds the inbound listeners'
	// RBAC and jwt_authn (RequestAuthentication): it reads them, never
	// writes them (no status subresource either). Nothing else of
	// security.istio.io.
	want := map[string][]string{
		api.AgentName + " authorizationpolicies":       {"get", "list", "watch"},
		api.AgentName + " peerauthentications":         {"get", "list", "watch"},
		api.AgentName + " requestauthentications":      {"get", "list", "watch"},
		api.ControllerName + " authorizationpolicies":  {"get", "list", "watch"},
		api.ControllerName + " peerauthentications":    {"get", "list", "watch"},
		api.ControllerName + " requestauthentications": {"get", "list", "watch"},
	}
	for k, verbs := range want {
		if got := istioVerbs[k]; !slices.Equal(got, verbs) {
			t.Errorf("%s (security.istio.io): verbs %v, want %v", k, got, verbs)
		}
	}
	for k, got := range istioVerbs {
		if _, ok := want[k]; !ok {
			t.Errorf("%s (security.istio.io): verbs %v, want none", k, got)
		}
	}
	if !bound[api.ControllerName] || !bound[api.AgentName] {
		t.Errorf("controller and agent must be bound to their roles: %v", bound)
	}
	if bound[api.EnvoyName] {
		t.Error("the node Envoy must have no RBAC binding")
	}
	if got := roleBound[api.DebugServiceAccount]; len(got) != 1 || got[0] != api.DebugServiceAccount {
		t.Errorf("Role %s is bound to %v, want its ServiceAccount only", api.DebugServiceAccount, got)
	}
	if got := roleBound[api.DebugServiceAccount+"-client"]; len(got) != 0 {
		t.Errorf("Role %s-client is bound to %v: it is for users to bind", api.DebugServiceAccount, got)
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

// TestChartCRDs: the embedded chart installs exactly the CRDs of
// install/chart/crds (which the agent's tests apply), and carries none of
// that Go package's files (.helmignore, applied by Chart as by helm).
func TestChartCRDs(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]byte{}
	for _, crd := range c.CRDObjects() {
		got[crd.Name] = crd.File.Data
	}
	ents, err := crds.FS.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		want, _ := crds.FS.ReadFile(e.Name())
		if name := "crds/" + e.Name(); !bytes.Equal(got[name], want) {
			t.Errorf("the chart's %s differs from install/chart/crds/%s", name, e.Name())
		}
		delete(got, "crds/"+e.Name())
	}
	for name := range got {
		t.Errorf("the chart installs %s, which install/chart/crds does not embed", name)
	}
	for _, f := range append(c.Raw, c.Files...) {
		if strings.HasSuffix(f.Name, ".go") {
			t.Errorf("the chart carries %s", f.Name)
		}
	}
}

// TestNodeEnvoyCapabilities pins what the node Envoy may do to the host: no
// privilege, one capability — NET_ADMIN, for the transparent upstream
// sockets of original_src (datapath.md, "The node proxy hop").
func TestNodeEnvoyCapabilities(t *testing.T) {
	out := renderDefault(t)
	found := false
	for _, obj := range decodeAll(t, out) {
		ds, ok := obj.(*appsv1.DaemonSet)
		if !ok || ds.Name != api.EnvoyName {
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

// TestXDSCredentialsWiring: the node Envoy authenticates to the controller
// with no manual step — a projected token of the controller's audience
// (short-lived, not the API server's), the CA bundle the controller
// publishes, and a bootstrap that reads both from where they are mounted —
// and the names the chart spells are the ones the code uses.
func TestXDSCredentialsWiring(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	for name, vals := range lintValues {
		t.Run(name, func(t *testing.T) {
			out, err := Render(c, RenderOptions{Values: vals})
			if err != nil {
				t.Fatal(err)
			}
			existing := ""
			if cv, ok := vals["controller"].(map[string]any); ok {
				if x, ok := cv["xds"].(map[string]any); ok {
					existing, _ = x["tls"].(map[string]any)["existingSecret"].(string)
				}
			}
			var envoyDS *appsv1.DaemonSet
			var ctrl *appsv1.Deployment
			kinds := map[string]bool{}
			for _, o := range decodeAll(t, out) {
				switch o := o.(type) {
				case *appsv1.DaemonSet:
					if o.Name == api.EnvoyName {
						envoyDS = o
					}
				case *appsv1.Deployment:
					ctrl = o
				case *corev1.ServiceAccount:
					if o.Name == api.EnvoyName && (o.AutomountServiceAccountToken == nil || *o.AutomountServiceAccountToken) {
						t.Error("the node Envoy's ServiceAccount mounts an API token")
					}
				case *corev1.Secret:
					kinds["Secret/"+o.Name] = true
					if len(o.Data)+len(o.StringData) > 0 {
						t.Errorf("Secret %s is rendered with data: the CA key must never be in a manifest", o.Name)
					}
				case *corev1.ConfigMap:
					kinds["ConfigMap/"+o.Name] = true
				case *unstructured.Unstructured:
					kinds[o.GetKind()+"/"+o.GetName()] = true
				case *networkingv1.NetworkPolicy:
					kinds["NetworkPolicy/"+o.Name] = true
				}
			}
			if envoyDS == nil || ctrl == nil {
				t.Fatal("no node Envoy DaemonSet or controller Deployment")
			}
			spec := envoyDS.Spec.Template.Spec
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Error("the node Envoy pod mounts an API token")
			}
			mounts := map[string]string{} // volume → mount path (envoy container)
			for _, ctr := range spec.Containers {
				if ctr.Name == "envoy" {
					for _, m := range ctr.VolumeMounts {
						mounts[m.Name] = m.MountPath
					}
				}
			}
			var tokenFile, caFile string
			for _, v := range spec.Volumes {
				switch {
				case v.Projected != nil:
					for _, src := range v.Projected.Sources {
						if sat := src.ServiceAccountToken; sat != nil {
							if sat.Audience != api.XDSAudience {
								t.Errorf("token audience %q, want %q", sat.Audience, api.XDSAudience)
							}
							if sat.ExpirationSeconds == nil || *sat.ExpirationSeconds > 3600 {
								t.Errorf("token lifetime %v s: at most an hour", sat.ExpirationSeconds)
							}
							tokenFile = mounts[v.Name] + "/" + sat.Path
						}
					}
				case v.ConfigMap != nil:
					if v.ConfigMap.Name != api.CABundleConfigMap || len(v.ConfigMap.Items) != 1 || v.ConfigMap.Items[0].Key != api.CABundleKey ||
						v.ConfigMap.Optional != nil && *v.ConfigMap.Optional {
						t.Errorf("CA volume %+v: want key %s of ConfigMap %s, required", v.ConfigMap, api.CABundleKey, api.CABundleConfigMap)
					}
					caFile = mounts[v.Name] + "/" + v.ConfigMap.Items[0].Path
				}
			}
			args := strings.Join(spec.InitContainers[0].Args, " ")
			if tokenFile == "" || caFile == "" || !strings.Contains(args, "--token-file="+tokenFile) || !strings.Contains(args, "--ca-file="+caFile) {
				t.Errorf("bootstrap %q does not read the token (%s) and CA (%s) where the envoy container has them", args, tokenFile, caFile)
			}
			if tokenFile != xds.DefaultTokenFile || caFile != xds.DefaultCAFile {
				t.Errorf("mounted at %s and %s; the bootstrap's defaults are %s and %s", tokenFile, caFile, xds.DefaultTokenFile, xds.DefaultCAFile)
			}
			// The bootstrap these arguments make validates.
			if _, err := xds.Bootstrap(xds.BootstrapOptions{Node: "n", Controller: api.ControllerName + "." + api.DefaultNamespace + ".svc:15010", TokenFile: tokenFile, CAFile: caFile}); err != nil {
				t.Error(err)
			}
			cargs := strings.Join(ctrl.Spec.Template.Spec.Containers[0].Args, " ")
			for _, want := range []string{"--namespace=" + api.DefaultNamespace, "--node-proxy-service-account=" + api.EnvoyName, "--controller-service=" + api.ControllerName,
				"--xds-ca-secret=" + api.CASecret, "--xds-ca-bundle=" + api.CABundleConfigMap} {
				if !strings.Contains(cargs, want) {
					t.Errorf("controller args lack %s: %s", want, cargs)
				}
			}
			if strings.Contains(cargs, "insecure") {
				t.Errorf("the chart runs the controller insecure: %s", cargs)
			}
			if got := strings.Contains(cargs, "--xds-tls-cert-file"); got != (existing != "") || kinds["Secret/"+api.CASecret] != (existing == "") {
				t.Errorf("existingSecret %q: controller reads files %v, chart makes the CA Secret %v", existing, got, kinds["Secret/"+api.CASecret])
			}
			if !kinds["ConfigMap/"+api.CABundleConfigMap] {
				t.Error("no CA bundle ConfigMap")
			}
			np := true
			if cv, ok := vals["controller"].(map[string]any); ok {
				if p, ok := cv["networkPolicy"].(map[string]any); ok && p["enabled"] == false {
					np = false
				}
			}
			if kinds["NetworkPolicy/"+api.ControllerName] != np || kinds["TrafficPolicy/"+api.ControllerName+"-xds"] != np {
				t.Errorf("network policy enabled %v: NetworkPolicy %v, TrafficPolicy %v", np, kinds["NetworkPolicy/"+api.ControllerName], kinds["TrafficPolicy/"+api.ControllerName+"-xds"])
			}
		})
	}
}

// TestControllerNetworkPolicy: only the xDS and monitoring ports are
// admitted, xDS from host addresses and the mesh's namespaces, monitoring
// from host addresses (and monitoringFrom); the TrafficPolicy denies the
// xDS port to pods outside the mesh's namespaces.
func TestControllerNetworkPolicy(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(c, RenderOptions{Values: lintValues["node CIDRs, Prometheus"]})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range decodeAll(t, out) {
		switch o := o.(type) {
		case *networkingv1.NetworkPolicy:
			if o.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != api.ControllerName || len(o.Spec.PolicyTypes) != 1 || o.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress {
				t.Errorf("policy selects %v, types %v", o.Spec.PodSelector, o.Spec.PolicyTypes)
			}
			got := map[int32][]string{}
			for _, r := range o.Spec.Ingress {
				if len(r.Ports) != 1 || len(r.From) == 0 {
					t.Errorf("rule %+v: one port, some peers", r)
					continue
				}
				for _, p := range r.From {
					switch {
					case p.IPBlock != nil:
						got[r.Ports[0].Port.IntVal] = append(got[r.Ports[0].Port.IntVal], p.IPBlock.CIDR)
					case p.NamespaceSelector != nil:
						got[r.Ports[0].Port.IntVal] = append(got[r.Ports[0].Port.IntVal], labels(p.NamespaceSelector.MatchLabels))
					}
				}
			}
			want := map[int32][]string{
				15010: {"10.0.0.0/16", "192.168.10.0/24", "istio.io/dataplane-mode=nodemesh"},
				15014: {"10.0.0.0/16", "192.168.10.0/24", "kubernetes.io/metadata.name=monitoring"},
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("admitted %v, want %v", got, want)
			}
		case *unstructured.Unstructured:
			if o.GetKind() != "TrafficPolicy" {
				continue
			}
			if a, _, _ := unstructured.NestedString(o.Object, "spec", "action"); a != "Deny" {
				t.Errorf("TrafficPolicy action %q, want Deny", a)
			}
		}
	}
}

func labels(m map[string]string) string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return strings.Join(out, ",")
}

// TestLocalAccessSampleMatchesChart: the README's local example applies
// samples/cluster/controller-access.yaml for what the chart would create;
// its debug account and RBAC are the chart's.
func TestLocalAccessSampleMatchesChart(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "samples", "cluster", "controller-access.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := renderDefault(t)
	key := func(o runtime.Object) (string, string) {
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			return "ServiceAccount/" + o.Name, fmt.Sprint(o.AutomountServiceAccountToken == nil || *o.AutomountServiceAccountToken)
		case *rbacv1.Role:
			return "Role/" + o.Name, fmt.Sprint(o.Rules)
		case *rbacv1.RoleBinding:
			return "RoleBinding/" + o.Name, fmt.Sprint(o.RoleRef, o.Subjects)
		}
		return "", ""
	}
	chart := map[string]string{}
	for _, o := range decodeAll(t, out) {
		if k, v := key(o); k != "" {
			chart[k] = v
		}
	}
	n := 0
	for _, o := range decodeAll(t, string(data)) {
		k, v := key(o)
		if k == "" {
			continue
		}
		n++
		if chart[k] != v {
			t.Errorf("%s: sample %s, chart %s", k, v, chart[k])
		}
	}
	if n != 3 {
		t.Errorf("the sample has %d of the debug account's objects, want 3", n)
	}
}

// TestCABundleInAllNamespaces: the controller's flag and the cluster-wide
// ConfigMap rights come and go together with the value (the rights without
// the flag are unused privilege; the flag without them, errors forever).
func TestCABundleInAllNamespaces(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	for name, on := range map[string]bool{"default (on)": true, "off": false} {
		t.Run(name, func(t *testing.T) {
			var vals map[string]any
			if !on {
				vals = map[string]any{"controller": map[string]any{"xds": map[string]any{"caBundleInAllNamespaces": false}}}
			}
			out, err := Render(c, RenderOptions{Values: vals})
			if err != nil {
				t.Fatal(err)
			}
			var flag, create, watch bool
			for _, obj := range decodeAll(t, out) {
				switch o := obj.(type) {
				case *appsv1.Deployment:
					for _, ctr := range o.Spec.Template.Spec.Containers {
						flag = flag || slices.Contains(ctr.Args, "--xds-ca-bundle-all-namespaces")
					}
				case *rbacv1.ClusterRole:
					for _, r := range o.Rules {
						if !slices.Contains(r.Resources, "configmaps") {
							continue
						}
						create = create || slices.Contains(r.Verbs, "create")
						watch = watch || slices.Contains(r.Verbs, "watch") && slices.Equal(r.ResourceNames, []string{api.CABundleConfigMap})
					}
				}
			}
			if flag != on || create != on || watch != on {
				t.Errorf("flag %v, create ConfigMaps %v, watch the bundle cluster-wide %v: want all %v", flag, create, watch, on)
			}
		})
	}
}
