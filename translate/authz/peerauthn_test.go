package authz

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

var paEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// pa is a PeerAuthentication created age seconds before paEpoch+100s
// (larger age: older). mode "" leaves mtls out; ports are "port=MODE".
func pa(ns, name string, age int, sel map[string]string, mode string, ports ...string) *securityv1.PeerAuthentication {
	p := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		CreationTimestamp: metav1.NewTime(paEpoch.Add(time.Duration(100-age) * time.Second))}}
	if sel != nil {
		p.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: sel}
	}
	if mode != "" {
		p.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_Mode(
			securityapi.PeerAuthentication_MutualTLS_Mode_value[mode])}
	}
	for _, pm := range ports {
		port, m, _ := strings.Cut(pm, "=")
		var n uint32
		fmt.Sscan(port, &n)
		if p.Spec.PortLevelMtls == nil {
			p.Spec.PortLevelMtls = map[uint32]*securityapi.PeerAuthentication_MutualTLS{}
		}
		if m == "" {
			p.Spec.PortLevelMtls[n] = &securityapi.PeerAuthentication_MutualTLS{}
			continue
		}
		p.Spec.PortLevelMtls[n] = &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_Mode(
			securityapi.PeerAuthentication_MutualTLS_Mode_value[m])}
	}
	return p
}

// effString is an effective setting as "MODE level name; port=MODE level name…".
func effString(e EffectivePeerAuthn) string {
	s := func(x PeerAuthnSetting) string {
		return strings.TrimSpace(fmt.Sprintf("%s %s %s", x.Mode, x.Level, x.From.Name))
	}
	parts := []string{s(e.Workload)}
	for _, p := range e.SortedPorts() {
		parts = append(parts, fmt.Sprintf("%d=%s", p, s(e.Ports[p])))
	}
	return strings.Join(parts, "; ")
}

var appFoo = map[string]string{"app": "foo"}

// TestComposePeerAuthentication follows istiod's own cases
// (pilot/pkg/security/authn/policy_applier_test.go TestComposePeerAuthentication,
// same names; there the root namespace is "root-namespace" and the
// workload my-ns/app=foo), plus its selection (getConfigsForWorkload).
func TestComposePeerAuthentication(t *testing.T) {
	const root = "root-namespace"
	tests := map[string]struct {
		pas    []*securityv1.PeerAuthentication
		ns     string
		labels map[string]string
		want   string
	}{
		"no config": {want: "PERMISSIVE default"},
		"mesh only": {pas: []*securityv1.PeerAuthentication{pa(root, "default", 0, nil, "STRICT")},
			want: "STRICT mesh default"},
		"mesh vs namespace": {pas: []*securityv1.PeerAuthentication{pa(root, "default", 0, map[string]string{}, "STRICT"),
			pa("my-ns", "default", 0, nil, "PERMISSIVE")}, want: "PERMISSIVE namespace default"},
		"ignore non-emptypb selector in root namespace": {pas: []*securityv1.PeerAuthentication{pa(root, "default", 0, appFoo, "STRICT")},
			want: "PERMISSIVE default"},
		"workload vs namespace config": {pas: []*securityv1.PeerAuthentication{pa("my-ns", "default", 0, nil, ""),
			pa("my-ns", "foo", 0, appFoo, "")}, want: "PERMISSIVE default"},
		"workload vs mesh config": {pas: []*securityv1.PeerAuthentication{pa("my-ns", "default", 0, nil, "PERMISSIVE"),
			pa(root, "default", 0, nil, "DISABLE")}, want: "PERMISSIVE namespace default"},
		"multiple mesh policy": {pas: []*securityv1.PeerAuthentication{pa(root, "now", 0, nil, "DISABLE"),
			pa(root, "second ago", 1, nil, "PERMISSIVE"), pa(root, "second later", 1, nil, "STRICT")},
			want: "PERMISSIVE mesh second ago"},
		"multiple namespace policy": {pas: []*securityv1.PeerAuthentication{pa("my-ns", "now", 0, nil, "DISABLE"),
			pa("my-ns", "second ago", 1, nil, "PERMISSIVE"), pa("my-ns", "second later", 1, nil, "STRICT")},
			want: "PERMISSIVE namespace second ago"},
		// istiod's case hands ComposePeerAuthentication a stage=prod policy
		// as if it applied; here the pod has both labels so it does.
		"multiple workload policy": {pas: []*securityv1.PeerAuthentication{pa("my-ns", "now", 0, appFoo, "DISABLE"),
			pa("my-ns", "second ago", 1, appFoo, "PERMISSIVE"), pa("my-ns", "second later", 1, map[string]string{"stage": "prod"}, "STRICT")},
			labels: map[string]string{"app": "foo", "stage": "prod"}, want: "PERMISSIVE workload second ago"},
		"inheritance: default mesh": {pas: []*securityv1.PeerAuthentication{pa(root, "default", 0, nil, "UNSET")},
			want: "PERMISSIVE default"},
		"inheritance: mesh to workload": {pas: []*securityv1.PeerAuthentication{pa(root, "default", 0, nil, "STRICT"),
			pa("my-ns", "foo", 0, appFoo, "")}, want: "STRICT mesh default"},
		"inheritance: namespace to workload": {pas: []*securityv1.PeerAuthentication{pa("my-ns", "default", 0, nil, "STRICT"),
			pa("my-ns", "foo", 0, appFoo, "")}, want: "STRICT namespace default"},
		"inheritance: mesh to namespace to workload": {pas: []*securityv1.PeerAuthentication{pa(root, "default", 0, nil, "STRICT"),
			pa("my-ns", "default", 0, nil, "UNSET"), pa("my-ns", "foo", 0, appFoo, "")}, want: "STRICT mesh default"},
		"port level": {pas: []*securityv1.PeerAuthentication{pa(root, "default", 0, nil, "STRICT"),
			pa("my-ns", "foo", 0, appFoo, "", "80=DISABLE", "90=UNSET", "100=")},
			want: "STRICT mesh default; 80=DISABLE port foo; 90=STRICT mesh default; 100=STRICT mesh default"},

		// Selection (getConfigsForWorkload) and what nodemesh adds.
		"a workload policy whose selector the pod does not match": {pas: []*securityv1.PeerAuthentication{pa("my-ns", "default", 0, nil, "STRICT"),
			pa("my-ns", "bar", 0, map[string]string{"app": "bar"}, "DISABLE")}, want: "STRICT namespace default"},
		"another namespace's policy does not apply": {pas: []*securityv1.PeerAuthentication{pa("other", "default", 0, nil, "STRICT")},
			want: "PERMISSIVE default"},
		"ties of creation time: the first name wins": {pas: []*securityv1.PeerAuthentication{pa("my-ns", "b", 0, appFoo, "STRICT"),
			pa("my-ns", "a", 0, appFoo, "DISABLE")}, want: "DISABLE workload a"},
		"port-level of a namespace policy is ignored": {pas: []*securityv1.PeerAuthentication{pa("my-ns", "default", 0, nil, "PERMISSIVE", "8080=STRICT")},
			want: "PERMISSIVE namespace default"},
		"a workload policy with a UNSET port-level over a DISABLE namespace": {pas: []*securityv1.PeerAuthentication{pa("my-ns", "default", 0, nil, "DISABLE"),
			pa("my-ns", "foo", 0, appFoo, "STRICT", "8080=UNSET", "9090=PERMISSIVE")},
			want: "STRICT workload foo; 8080=STRICT workload foo; 9090=PERMISSIVE port foo"},
		"port 0 is ignored": {pas: []*securityv1.PeerAuthentication{pa("my-ns", "foo", 0, appFoo, "STRICT", "0=DISABLE")},
			want: "STRICT workload foo"},
		"the root namespace's own pods: mesh level only": {pas: []*securityv1.PeerAuthentication{pa(root, "default", 0, nil, "STRICT"),
			pa(root, "foo", 0, appFoo, "DISABLE")}, ns: root, want: "STRICT mesh default"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ns, labels := tc.ns, tc.labels
			if ns == "" {
				ns = "my-ns"
			}
			if labels == nil {
				labels = appFoo
			}
			got := effString(NewPeerAuthentications(tc.pas, root, nil).For(ns, labels))
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestPeerAuthenticationDiagnostics(t *testing.T) {
	tests := map[string]struct {
		pas  []*securityv1.PeerAuthentication
		want []string
	}{
		"a younger namespace-level policy is ignored": {pas: []*securityv1.PeerAuthentication{pa("ns", "old", 5, nil, "STRICT"), pa("ns", "young", 1, nil, "DISABLE")},
			want: []string{"warning ns/young spec: ignored: the namespace-level PeerAuthentication old is older"}},
		"a younger mesh-level policy is ignored": {pas: []*securityv1.PeerAuthentication{pa("istio-system", "old", 5, nil, "STRICT"), pa("istio-system", "young", 1, nil, "DISABLE")},
			want: []string{"warning istio-system/young spec: ignored: the mesh-level PeerAuthentication old is older"}},
		"a selector in the root namespace": {pas: []*securityv1.PeerAuthentication{pa("istio-system", "sel", 0, appFoo, "STRICT")},
			want: []string{"warning istio-system/sel spec.selector: a PeerAuthentication with a selector in the root namespace"}},
		"port-level without a selector": {pas: []*securityv1.PeerAuthentication{pa("ns", "p", 0, nil, "STRICT", "80=DISABLE")},
			want: []string{"error ns/p spec.portLevelMtls: a mesh- or namespace-level PeerAuthentication cannot have port-level mTLS"}},
		"a port out of range": {pas: []*securityv1.PeerAuthentication{pa("ns", "p", 0, appFoo, "STRICT", "70000=DISABLE")},
			want: []string{"error ns/p spec.portLevelMtls[70000]: port 70000 is outside 1..65535"}},
		"valid policies say nothing": {pas: []*securityv1.PeerAuthentication{pa("ns", "p", 0, appFoo, "STRICT", "80=DISABLE"), pa("ns", "d", 0, nil, "STRICT")}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got []string
			for _, d := range NewPeerAuthentications(tc.pas, "", nil).Diagnostics {
				got = append(got, fmt.Sprintf("%s %s/%s %s: %s", d.Severity, d.Resource.Namespace, d.Resource.Name, d.Field, d.Message))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("got %q, want prefix %q", got[i], tc.want[i])
				}
			}
		})
	}
}

// TestPeerAuthenticationUnreadable: a policy the reader could not decode
// makes its namespace (the mesh, in the root namespace) STRICT everywhere,
// whatever else applies.
func TestPeerAuthenticationUnreadable(t *testing.T) {
	pas := []*securityv1.PeerAuthentication{pa("ns", "foo", 0, appFoo, "DISABLE")}
	for name, tc := range map[string]struct {
		bad  ir.ResourceRef
		ns   string
		want string
	}{
		"in the pod's namespace":   {bad: ir.ResourceRef{Kind: PeerAuthnKind, Namespace: "ns", Name: "bad"}, ns: "ns", want: "STRICT unreadable bad"},
		"in the root namespace":    {bad: ir.ResourceRef{Kind: PeerAuthnKind, Namespace: "istio-system", Name: "bad"}, ns: "ns", want: "STRICT unreadable bad"},
		"in another namespace":     {bad: ir.ResourceRef{Kind: PeerAuthnKind, Namespace: "other", Name: "bad"}, ns: "ns", want: "DISABLE workload foo"},
		"nil index is the default": {ns: "", want: "PERMISSIVE default"},
	} {
		t.Run(name, func(t *testing.T) {
			idx := NewPeerAuthentications(pas, "", []ir.ResourceRef{tc.bad})
			if tc.ns == "" {
				idx = nil
			}
			if got := effString(idx.For(tc.ns, appFoo)); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// ztunnelAuthz is the part of istiod's converted PeerAuthentication
// (istio.security.Authorization) the oracle files use.
type ztunnelAuthz struct {
	Action string `json:"action"`
	Groups []struct {
		Rules []struct {
			Matches []struct {
				DestinationPorts    []uint32         `json:"destinationPorts"`
				NotDestinationPorts []uint32         `json:"notDestinationPorts"`
				NotPrincipals       []map[string]any `json:"notPrincipals"`
			} `json:"matches"`
		} `json:"rules"`
	} `json:"groups"`
}

// deniesUnauthenticated evaluates the converted policy for a peer without a
// principal (a plaintext peer) on port: groups OR, rules AND, matches OR.
func (z ztunnelAuthz) deniesUnauthenticated(port uint32) bool {
	for _, g := range z.Groups {
		all := true
		for _, r := range g.Rules {
			any := false
			for _, m := range r.Matches {
				ok := true
				if len(m.DestinationPorts) > 0 {
					ok = ok && contains(m.DestinationPorts, port)
				}
				ok = ok && !contains(m.NotDestinationPorts, port)
				any = any || ok // notPrincipals presence: a peer without a principal matches
			}
			all = all && any
		}
		if all {
			return true
		}
	}
	return false
}

func contains(list []uint32, p uint32) bool {
	for _, x := range list {
		if x == p {
			return true
		}
	}
	return false
}

// TestPeerAuthenticationAmbientOracle checks the effective modes against
// what istiod hands ztunnel for the same policies
// (../shared/conformance/istio-ambient-authz/peer-authn-*: istiod's
// ambientindex tests, workload foo/app=a): a port is STRICT exactly when
// ztunnel denies a peer without a principal there. When the workload's
// effective policy is STRICT with no exception istiod sends no converted
// policy but references its static STRICT policy
// (authorization.go convertedSelectorPeerAuthentications): those files are
// empty and the static cases are listed here.
func TestPeerAuthenticationAmbientOracle(t *testing.T) {
	// The workplace's reference folder (as translate/oracle_test.go's
	// shared), or NODEMESH_SHARED from a worktree elsewhere.
	shared := filepath.Join("..", "..", "..", "shared")
	if s := os.Getenv("NODEMESH_SHARED"); s != "" {
		shared = s
	}
	dir := filepath.Join(shared, "conformance", "istio-ambient-authz")
	ins, _ := filepath.Glob(filepath.Join(dir, "peer-authn-*-in.yaml"))
	if len(ins) == 0 {
		t.Skipf("no oracle files in %s", dir)
	}
	staticStrict := map[string]bool{"peer-authn-strict": true, "peer-authn-strict-workload": true, "peer-authn-strict-and-strict-port-mtls": true}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), "-in.yaml")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			l := input.NewLoader("foo")
			l.KeepIgnored = true
			l.LoadBytes(in, b)
			var pas []*securityv1.PeerAuthentication
			for _, o := range l.Bag().Other {
				if p, ok := o.Typed.(*securityv1.PeerAuthentication); ok {
					pas = append(pas, p)
				}
			}
			if len(pas) == 0 {
				t.Fatalf("no PeerAuthentication in %s", in)
			}
			out, err := os.ReadFile(filepath.Join(dir, name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var z ztunnelAuthz
			if err := yaml.Unmarshal(out, &z); err != nil {
				t.Fatal(err)
			}
			eff := NewPeerAuthentications(pas, "istio-system", nil).For("foo", map[string]string{"app": "a"})
			for _, port := range []uint32{8080, 9090, 7070} {
				want := staticStrict[name]
				if len(z.Groups) > 0 {
					want = z.deniesUnauthenticated(port)
				}
				if got := eff.Port(port).Mode == ModeStrict; got != want {
					t.Errorf("port %d: STRICT %v, ztunnel denies a plaintext peer: %v (effective %s)", port, got, want, effString(eff))
				}
			}
		})
	}
}
