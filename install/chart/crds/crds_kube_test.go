package crds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// installed applies the committed CRDs to a real API server — which refuses
// a CRD whose CEL rules could exceed its cost budget, or whose schema is not
// structural — and returns a dynamic client.
func installed(t *testing.T) (*kubetest.Env, dynamic.Interface) {
	t.Helper()
	env := kubetest.Get(t)
	if err := env.InstallCRDs(context.Background(), crds.All()); err != nil {
		t.Fatalf("the API server refuses the CRDs: %v", err)
	}
	dc, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return env, dc
}

func object(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("test case YAML: %v", err)
	}
	return u
}

// repeat is n copies of item as YAML flow-sequence entries.
func repeat(item string, n int) string {
	return "[" + strings.TrimSuffix(strings.Repeat(item+", ", n), ", ") + "]"
}

// TestTrafficPolicyValidation: what the API server accepts and refuses of a
// TrafficPolicy, with its message. Every rule of the schema has a case, so
// a marker lost in api/v1alpha1 fails here.
func TestTrafficPolicyValidation(t *testing.T) {
	env, dc := installed(t)
	ns := env.Namespace(t, "crd-tp", nil)
	res := dc.Resource(v1alpha1.TrafficPolicyResource).Namespace(ns)
	peer := `{cidr: 10.0.0.0/8}`
	cases := map[string]struct {
		spec string
		// want is a substring of the API server's refusal; empty: accepted.
		want string
	}{
		"every peer and port form": {spec: `{action: Allow, selector: {matchLabels: {app: web}}, ingress: [{peers: [
			{podSelector: {matchExpressions: [{key: app, operator: In, values: [a]}]}},
			{namespaceSelector: {matchLabels: {team: a}}}, {cidr: 10.0.0.0/8}, {cidr: "fd00::/8"}],
			ports: [{port: 80}, {protocol: UDP, port: 53, endPort: 54}, {protocol: SCTP, port: 9}]}]}`},
		"an empty list is a rule set":  {spec: `{action: Deny, egress: []}`},
		"no rules":                     {spec: `{action: Allow}`, want: "a policy needs ingress or egress rules (or both)"},
		"no action":                    {spec: `{ingress: []}`, want: `spec.action: Required value`},
		"unknown action":               {spec: `{action: Audit, ingress: []}`, want: `spec.action: Unsupported value: "Audit"`},
		"not a CIDR":                   {spec: `{action: Deny, ingress: [{peers: [{cidr: 10.0.0.300/8}]}]}`, want: "not a CIDR (e.g. 10.0.0.0/8)"},
		"CIDR too long":                {spec: `{action: Deny, ingress: [{peers: [{cidr: "` + strings.Repeat("1", 44) + `"}]}]}`, want: "may not be more than 43 bytes"},
		"peer with two kinds":          {spec: `{action: Deny, ingress: [{peers: [{cidr: 10.0.0.0/8, podSelector: {}}]}]}`, want: "spec.ingress[0].peers[0]: Too many: 2"},
		"empty peer":                   {spec: `{action: Deny, ingress: [{peers: [{}]}]}`, want: "spec.ingress[0].peers[0]: Invalid value"},
		"endPort below port":           {spec: `{action: Allow, egress: [{ports: [{port: 90, endPort: 80}]}]}`, want: "endPort must not be below port"},
		"port 0":                       {spec: `{action: Allow, egress: [{ports: [{port: 0}]}]}`, want: "should be greater than or equal to 1"},
		"endPort above 65535":          {spec: `{action: Allow, egress: [{ports: [{port: 1, endPort: 65536}]}]}`, want: "should be less than or equal to 65535"},
		"no port":                      {spec: `{action: Allow, egress: [{ports: [{protocol: TCP}]}]}`, want: "spec.egress[0].ports[0].port: Required value"},
		"unknown protocol":             {spec: `{action: Allow, egress: [{ports: [{protocol: ICMP, port: 1}]}]}`, want: `Unsupported value: "ICMP"`},
		"unknown selector operator":    {spec: `{action: Allow, selector: {matchExpressions: [{key: a, operator: Like}]}, ingress: []}`, want: `spec.selector.matchExpressions[0].operator: Unsupported value: "Like"`},
		"peer selector operator":       {spec: `{action: Allow, ingress: [{peers: [{namespaceSelector: {matchExpressions: [{key: a, operator: Gt}]}}]}]}`, want: `Unsupported value: "Gt"`},
		"64 rules":                     {spec: `{action: Allow, ingress: ` + repeat(`{}`, 64) + `}`},
		"65 rules":                     {spec: `{action: Allow, ingress: ` + repeat(`{}`, 65) + `}`, want: "spec.ingress: Too many: 65: must have at most 64 items"},
		"32 peers":                     {spec: `{action: Allow, ingress: [{peers: ` + repeat(peer, 32) + `}]}`},
		"33 peers":                     {spec: `{action: Allow, ingress: [{peers: ` + repeat(peer, 33) + `}]}`, want: "spec.ingress[0].peers: Too many: 33: must have at most 32 items"},
		"33 ports":                     {spec: `{action: Allow, egress: [{ports: ` + repeat(`{port: 1}`, 33) + `}]}`, want: "spec.egress[0].ports: Too many: 33: must have at most 32 items"},
		"selector labels are a string": {spec: `{action: Allow, selector: {matchLabels: {a: 1}}, ingress: []}`, want: "spec.selector.matchLabels.a: Invalid value"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			obj := object(t, fmt.Sprintf("{apiVersion: %s, kind: %s, metadata: {name: tp-%s}, spec: %s}",
				v1alpha1.GroupVersion, v1alpha1.TrafficPolicyKind, rand.String(6), tc.spec))
			_, err := res.Create(context.Background(), obj, metav1.CreateOptions{})
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("accepted, want refused with %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("refused with %v\nwant %q", err, tc.want)
			}
		})
	}
}

// TestTrafficPolicyDefaults: a port without a protocol is stored as TCP.
func TestTrafficPolicyDefaults(t *testing.T) {
	env, dc := installed(t)
	ns := env.Namespace(t, "crd-tp", nil)
	obj := object(t, fmt.Sprintf("{apiVersion: %s, kind: %s, metadata: {name: p}, spec: {action: Allow, ingress: [{ports: [{port: 80}]}]}}",
		v1alpha1.GroupVersion, v1alpha1.TrafficPolicyKind))
	got, err := dc.Resource(v1alpha1.TrafficPolicyResource).Namespace(ns).Create(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rules, _, _ := unstructured.NestedSlice(got.Object, "spec", "ingress")
	if ports, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "ports"); ports[0].(map[string]any)["protocol"] != "TCP" {
		t.Errorf("stored port %v, want protocol TCP", ports[0])
	}
}

// TestTrafficPolicyGoType: a policy made with the Go type keeps what its
// ingress and egress say — an empty list is a present list (it isolates),
// a nil one is none — through the API server, which drops the nil list's
// null.
func TestTrafficPolicyGoType(t *testing.T) {
	env, dc := installed(t)
	ns := env.Namespace(t, "crd-tp", nil)
	res := dc.Resource(v1alpha1.TrafficPolicyResource).Namespace(ns)
	tp := &v1alpha1.TrafficPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.TrafficPolicyKind},
		ObjectMeta: metav1.ObjectMeta{Name: "egress-only"},
		Spec:       v1alpha1.TrafficPolicySpec{Action: v1alpha1.ActionAllow, Egress: []v1alpha1.TrafficRule{}},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(tp)
	if err != nil {
		t.Fatal(err)
	}
	got, err := res.Create(context.Background(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := got.Object["spec"].(map[string]any)
	if _, ok := spec["ingress"]; ok {
		t.Errorf("stored spec %v has ingress, want none", spec)
	}
	if e, ok := spec["egress"].([]any); !ok || len(e) != 0 {
		t.Errorf("stored spec %v, want egress: []", spec)
	}

	tp.Name, tp.Spec.Egress = "no-rules", nil
	obj, _ = runtime.DefaultUnstructuredConverter.ToUnstructured(tp)
	if _, err := res.Create(context.Background(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "a policy needs ingress or egress rules") {
		t.Errorf("a policy with nil lists: %v, want refused", err)
	}
}

// TestIdentityValidation: an Identity needs a namespace, has at most 64
// labels, and its spec never changes (a number must not change meaning
// while nodes use it); its metadata may.
func TestIdentityValidation(t *testing.T) {
	_, dc := installed(t)
	res := dc.Resource(v1alpha1.IdentityResource)
	ctx := context.Background()
	labels := map[string]any{}
	for i := range 65 {
		labels[fmt.Sprintf("l%d", i)] = "v"
	}
	many, _ := json.Marshal(labels)
	cases := map[string]struct{ spec, want string }{
		"valid":        {spec: `{namespace: a, serviceAccount: default, labels: {app: web}}`},
		"no namespace": {spec: `{serviceAccount: default}`, want: "spec.namespace: Required value"},
		"65 labels":    {spec: `{namespace: a, labels: ` + string(many) + `}`, want: "spec.labels: Too many: 65: must have at most 64 items"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			obj := object(t, fmt.Sprintf("{apiVersion: %s, kind: %s, metadata: {name: '%d'}, spec: %s}",
				v1alpha1.GroupVersion, v1alpha1.IdentityKind, 16000000+rand.Intn(700000), tc.spec))
			_, err := res.Create(ctx, obj, metav1.CreateOptions{})
			if err == nil {
				t.Cleanup(func() { res.Delete(context.Background(), obj.GetName(), metav1.DeleteOptions{}) })
			}
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("accepted, want refused with %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("refused with %v\nwant %q", err, tc.want)
			}
		})
	}

	t.Run("immutable", func(t *testing.T) {
		obj := object(t, fmt.Sprintf("{apiVersion: %s, kind: %s, metadata: {name: '%d'}, spec: {namespace: a, labels: {app: web}}}",
			v1alpha1.GroupVersion, v1alpha1.IdentityKind, 16000000+rand.Intn(700000)))
		got, err := res.Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { res.Delete(context.Background(), obj.GetName(), metav1.DeleteOptions{}) })
		changed := got.DeepCopy()
		_ = unstructured.SetNestedField(changed.Object, "other", "spec", "labels", "app")
		if _, err := res.Update(ctx, changed, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "identities are immutable") {
			t.Errorf("spec update: %v, want refused as immutable", err)
		}
		relabelled := got.DeepCopy()
		relabelled.SetLabels(map[string]string{v1alpha1.IdentityKeyHashLabel: "x"})
		if _, err := res.Update(ctx, relabelled, metav1.UpdateOptions{}); err != nil {
			t.Errorf("metadata update refused: %v", err)
		}
	})
}
