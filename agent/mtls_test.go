package agent

import (
	"slices"
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/agent/policy"
	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// TestMTLSCapturedPortsKeepTheGate: with Istio mTLS, the ports a
// DestinationRule ISTIO_MUTUAL may make sidecar clients send mTLS to are
// captured (nm_inbound) — the DestinationRule decoded from the API's
// unstructured form as the agent reads it — but only those captured for
// HTTP facts relax the authorization gate (policy.Endpoint.Captured): a
// port captured only for mTLS (CapturedForMTLS) keeps the L4 projection,
// since the node Envoy enforces no policy there. Without the rule, or
// with mTLS off, nothing is captured for mTLS.
func TestMTLSCapturedPortsKeepTheGate(t *testing.T) {
	meshed := map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh}
	svcs := []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "db"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "db"},
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
			{Name: "tcp-db", Port: 5432, TargetPort: intstr.FromString("db"), Protocol: corev1.ProtocolTCP}},
	}}}
	rec := &endpointRecord{Namespace: "a", Name: "db-1", Labels: map[string]string{"app": "db"},
		Ports: []policy.NamedPort{{Name: "db", Port: 5432, Proto: bpf.ProtoTCP}, {Name: "http", Port: 8080, Proto: bpf.ProtoTCP}}}
	// As the informer hands it over.
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(`{apiVersion: networking.istio.io/v1, kind: DestinationRule, metadata: {namespace: istio-system, name: mesh},
spec: {host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}}`), &obj); err != nil {
		t.Fatal(err)
	}
	drs, diags := decodeDestinationRules([]*unstructured.Unstructured{{Object: obj}})
	if len(drs) != 1 || len(diags) != 0 {
		t.Fatalf("decoded %d DestinationRules, diagnostics %v", len(drs), diags)
	}
	getOnly := `{apiVersion: security.istio.io/v1, kind: AuthorizationPolicy, metadata: {namespace: a, name: get},
spec: {selector: {matchLabels: {app: db}}, rules: [{to: [{operation: {methods: [GET]}}]}]}}`
	for name, tc := range map[string]struct {
		drs               []*networkingv1.DestinationRule
		l7, off           bool
		relaxed, mtlsOnly []uint16
	}{
		"the rule alone: both ports captured, none relaxed": {drs: drs, mtlsOnly: []uint16{5432, 8080}},
		"an HTTP policy relaxes its port only":              {drs: drs, l7: true, relaxed: []uint16{8080}, mtlsOnly: []uint16{5432}},
		"no rule: nothing":                                  {},
		"no rule, an HTTP policy: its port only, relaxed":   {l7: true, relaxed: []uint16{8080}},
		"mTLS off: the rule captures nothing":               {drs: drs, off: true},
		"mTLS off, an HTTP policy: as before":               {drs: drs, off: true, l7: true, relaxed: []uint16{8080}},
	} {
		t.Run(name, func(t *testing.T) {
			var docs []string
			if tc.l7 {
				docs = append(docs, getOnly)
			}
			models := apModels(t, docs...)
			c := authz.NewCapture(models, svcs)
			if !tc.off {
				c.WithMTLS(authz.MTLSTermination{DestinationRules: tc.drs})
			}
			relaxed, mtlsOnly := capturedPorts(c, rec, meshed)
			if !slices.Equal(relaxed, tc.relaxed) || !slices.Equal(mtlsOnly, tc.mtlsOnly) {
				t.Errorf("relaxed %v, mTLS only %v; want %v, %v", relaxed, mtlsOnly, tc.relaxed, tc.mtlsOnly)
			}
		})
	}
}

// apModels are AuthorizationPolicies' models as the agent makes them.
func apModels(t *testing.T, docs ...string) []ir.Policy {
	t.Helper()
	var aps []*securityv1.AuthorizationPolicy
	for _, d := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(d), &obj); err != nil {
			t.Fatal(err)
		}
		ap, err := policy.DecodeAuthorizationPolicy(obj)
		if err != nil {
			t.Fatal(err)
		}
		aps = append(aps, ap)
	}
	models, _ := policy.AuthorizationPolicyModels(aps, policy.AuthzOptions{})
	return models
}
