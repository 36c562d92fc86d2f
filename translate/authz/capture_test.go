package authz

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate/ir"
)

func capturePolicy(ns, name string, action ir.PolicyAction, l7 bool, mod ...func(*ir.Policy)) ir.Policy {
	m := ir.PolicyMatch{Namespaces: []ir.Glob{"other"}}
	if l7 {
		m = ir.PolicyMatch{L7: []ir.L7Condition{{Attribute: ir.L7Method, Values: []ir.Glob{"GET"}}}}
	}
	p := ir.Policy{
		Source: ir.ResourceRef{Kind: "AuthorizationPolicy", Namespace: ns, Name: name},
		Gate:   ir.GateAuthorization, Action: action, Scope: ir.PolicyScope{Namespace: ns},
		Rules: []ir.PolicyRule{{Direction: ir.PolicyIngress, Field: "spec.rules[0]",
			Clauses: []ir.PolicyClause{{Field: "spec.rules[0].to", Matches: []ir.PolicyMatch{m}}}}},
	}
	for _, f := range mod {
		f(&p)
	}
	return p
}

func svc(ns, name string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: selector, Ports: ports}}
}

func sp(name string, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}
}

func ports(ps []CapturedPort) string {
	if len(ps) == 0 {
		return "none"
	}
	out := ""
	for i, p := range ps {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%d/%s", p.Port, p.Protocol)
	}
	return out
}

// TestCapturePorts: the ports of a pod the node Envoy captures — its HTTP
// ports (Istio's protocol selection of the Services selecting it, through
// targetPort) when a policy with an HTTP fact (any action, dry-run too)
// applies to it and nodemesh authorizes it; nothing else.
func TestCapturePorts(t *testing.T) {
	meshedNS := map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh}
	web := map[string]string{"app": "web"}
	webPod := Workload{Namespace: "shop", Labels: web, NamedPorts: []NamedPort{{Name: "web", Port: 8080}, {Name: "admin", Port: 9901}}}
	httpSvc := svc("shop", "web", web, sp("http", 80, intstr.FromInt32(8080)))
	allowGET := capturePolicy("shop", "get", ir.PolicyAllow, true)
	appProto := func(p string) corev1.ServicePort {
		s := sp("web", 81, intstr.FromInt32(8081))
		s.AppProtocol = &p
		return s
	}
	tests := map[string]struct {
		pols     []ir.Policy
		services []*corev1.Service
		pod      Workload
		ns       map[string]string
		want     string
	}{
		"an HTTP port with an L7 ALLOW": {[]ir.Policy{allowGET}, []*corev1.Service{httpSvc}, webPod, meshedNS, "8080/HTTP"},
		"an L4-only policy captures nothing": {[]ir.Policy{capturePolicy("shop", "ns", ir.PolicyAllow, false)},
			[]*corev1.Service{httpSvc}, webPod, meshedNS, "none"},
		"no policy":   {nil, []*corev1.Service{httpSvc}, webPod, meshedNS, "none"},
		"an L7 DENY":  {[]ir.Policy{capturePolicy("shop", "d", ir.PolicyDeny, true)}, []*corev1.Service{httpSvc}, webPod, meshedNS, "8080/HTTP"},
		"an L7 AUDIT": {[]ir.Policy{capturePolicy("shop", "a", ir.PolicyAudit, true)}, []*corev1.Service{httpSvc}, webPod, meshedNS, "8080/HTTP"},
		"a dry-run L7 ALLOW": {[]ir.Policy{capturePolicy("shop", "dry", ir.PolicyAllow, true, func(p *ir.Policy) { p.DryRun = true })},
			[]*corev1.Service{httpSvc}, webPod, meshedNS, "8080/HTTP"},
		"a CUSTOM (denies) with an HTTP fact": {[]ir.Policy{capturePolicy("shop", "c", ir.PolicyDeny, true, func(p *ir.Policy) { p.Custom = "ext" })},
			[]*corev1.Service{httpSvc}, webPod, meshedNS, "8080/HTTP"},
		"a NetworkPolicy-gate policy with an L7 fact is not Istio's": {[]ir.Policy{capturePolicy("shop", "np", ir.PolicyAllow, true, func(p *ir.Policy) { p.Gate = ir.GateNetwork })},
			[]*corev1.Service{httpSvc}, webPod, meshedNS, "none"},
		"the L7 policy of another namespace":     {[]ir.Policy{capturePolicy("other", "get", ir.PolicyAllow, true)}, []*corev1.Service{httpSvc}, webPod, meshedNS, "none"},
		"a mesh-wide L7 policy (root namespace)": {[]ir.Policy{capturePolicy("", "get", ir.PolicyAllow, true)}, []*corev1.Service{httpSvc}, webPod, meshedNS, "8080/HTTP"},
		"a selector that selects another workload": {[]ir.Policy{capturePolicy("shop", "get", ir.PolicyAllow, true, func(p *ir.Policy) {
			p.Scope.Workloads = &ir.LabelSelector{MatchLabels: map[string]string{"app": "db"}}
		})}, []*corev1.Service{httpSvc}, webPod, meshedNS, "none"},
		"a selector that selects it": {[]ir.Policy{capturePolicy("shop", "get", ir.PolicyAllow, true, func(p *ir.Policy) {
			p.Scope.Workloads = &ir.LabelSelector{MatchLabels: web}
		})}, []*corev1.Service{httpSvc}, webPod, meshedNS, "8080/HTTP"},
		"a targetRef to its Service": {[]ir.Policy{capturePolicy("shop", "get", ir.PolicyAllow, true, func(p *ir.Policy) { p.Scope.Services = []string{"web"} })},
			[]*corev1.Service{httpSvc}, webPod, meshedNS, "8080/HTTP"},
		"a targetRef to another Service": {[]ir.Policy{capturePolicy("shop", "get", ir.PolicyAllow, true, func(p *ir.Policy) { p.Scope.Services = []string{"db"} })},
			[]*corev1.Service{httpSvc, svc("shop", "db", map[string]string{"app": "db"}, sp("http", 80, intstr.FromInt32(80)))}, webPod, meshedNS, "none"},
		"a named targetPort resolves to the container port": {[]ir.Policy{allowGET},
			[]*corev1.Service{svc("shop", "web", web, sp("http-web", 80, intstr.FromString("web")))}, webPod, meshedNS, "8080/HTTP"},
		"a named targetPort the pod does not have": {[]ir.Policy{allowGET},
			[]*corev1.Service{svc("shop", "web", web, sp("http", 80, intstr.FromString("missing")))}, webPod, meshedNS, "none"},
		"no targetPort: the port itself": {[]ir.Policy{allowGET},
			[]*corev1.Service{svc("shop", "web", web, sp("http", 80, intstr.IntOrString{}))}, webPod, meshedNS, "80/HTTP"},
		"appProtocol http on a port named otherwise": {[]ir.Policy{allowGET},
			[]*corev1.Service{svc("shop", "web", web, appProto("http"))}, webPod, meshedNS, "8081/HTTP"},
		"appProtocol kubernetes.io/h2c": {[]ir.Policy{allowGET},
			[]*corev1.Service{svc("shop", "web", web, appProto("kubernetes.io/h2c"))}, webPod, meshedNS, "8081/HTTP2"},
		"appProtocol tcp wins over the name": {[]ir.Policy{allowGET},
			[]*corev1.Service{svc("shop", "web", web, func() corev1.ServicePort { p := appProto("tcp"); p.Name = "http"; return p }())}, webPod, meshedNS, "none"},
		"grpc and http2 names": {[]ir.Policy{allowGET},
			[]*corev1.Service{svc("shop", "web", web, sp("grpc-api", 90, intstr.FromInt32(9090)), sp("http2", 91, intstr.FromInt32(9091)))}, webPod, meshedNS, "9090/GRPC 9091/HTTP2"},
		"a TCP port": {[]ir.Policy{allowGET},
			[]*corev1.Service{svc("shop", "web", web, sp("tcp-db", 5432, intstr.FromInt32(5432)))}, webPod, meshedNS, "none"},
		"an unnamed port (Istio sniffs it): left to eBPF": {[]ir.Policy{allowGET},
			[]*corev1.Service{svc("shop", "web", web, sp("", 80, intstr.FromInt32(8080)))}, webPod, meshedNS, "none"},
		"HTTP in one Service, TCP in another, same container port": {[]ir.Policy{allowGET},
			[]*corev1.Service{httpSvc, svc("shop", "web-raw", web, sp("tcp", 8080, intstr.FromInt32(8080)))}, webPod, meshedNS, "none"},
		"HTTP in two Services on the same container port: once": {[]ir.Policy{allowGET},
			[]*corev1.Service{httpSvc, svc("shop", "web-2", web, sp("http-alt", 8080, intstr.FromString("web")))}, webPod, meshedNS, "8080/HTTP"},
		"a UDP port named http neither captures nor conflicts": {[]ir.Policy{allowGET},
			[]*corev1.Service{httpSvc, svc("shop", "dns", web, corev1.ServicePort{Name: "http", Port: 8080, Protocol: corev1.ProtocolUDP})}, webPod, meshedNS, "8080/HTTP"},
		"a Service without selector":        {[]ir.Policy{allowGET}, []*corev1.Service{svc("shop", "web", nil, sp("http", 80, intstr.FromInt32(8080)))}, webPod, meshedNS, "none"},
		"a Service of another namespace":    {[]ir.Policy{allowGET}, []*corev1.Service{svc("other", "web", web, sp("http", 80, intstr.FromInt32(8080)))}, webPod, meshedNS, "none"},
		"a Service that selects other pods": {[]ir.Policy{allowGET}, []*corev1.Service{svc("shop", "db", map[string]string{"app": "db"}, sp("http", 80, intstr.FromInt32(8080)))}, webPod, meshedNS, "none"},
		"a pod with a sidecar":              {[]ir.Policy{allowGET}, []*corev1.Service{httpSvc}, func() Workload { w := webPod; w.Sidecar = true; return w }(), meshedNS, "none"},
		"a pod on the host network":         {[]ir.Policy{allowGET}, []*corev1.Service{httpSvc}, func() Workload { w := webPod; w.HostNetwork = true; return w }(), meshedNS, "none"},
		"a pod opted out": {[]ir.Policy{allowGET}, []*corev1.Service{httpSvc}, func() Workload {
			w := webPod
			w.Labels = map[string]string{"app": "web", api.DataplaneModeLabel: api.DataplaneModeNone}
			return w
		}(), meshedNS, "none"},
		"a namespace not opted in": {[]ir.Policy{allowGET}, []*corev1.Service{httpSvc}, webPod, nil, "none"},
		"a namespace still injected with sidecars": {[]ir.Policy{allowGET}, []*corev1.Service{httpSvc}, webPod,
			map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh, api.IstioInjectionLabel: api.IstioInjectionEnabled}, "none"},
		"a namespace with an Istio revision": {[]ir.Policy{allowGET}, []*corev1.Service{httpSvc}, webPod,
			map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh, api.IstioRevisionLabel: "canary"}, "none"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := NewCapture(tc.pols, tc.services).Ports(tc.pod, tc.ns)
			if ports(got) != tc.want {
				t.Errorf("captured %s, want %s", ports(got), tc.want)
			}
		})
	}
}

// TestCaptureDeterministic: the Services' order does not change the
// protocol chosen for a port two Services name differently.
func TestCaptureDeterministic(t *testing.T) {
	web := map[string]string{"app": "web"}
	a := svc("shop", "a", web, sp("http", 80, intstr.FromInt32(8080)))
	b := svc("shop", "b", web, sp("grpc", 81, intstr.FromInt32(8080)))
	pols := []ir.Policy{capturePolicy("shop", "get", ir.PolicyAllow, true)}
	w := Workload{Namespace: "shop", Labels: web}
	ns := map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh}
	one := ports(NewCapture(pols, []*corev1.Service{a, b}).Ports(w, ns))
	two := ports(NewCapture(pols, []*corev1.Service{b, a}).Ports(w, ns))
	if one != two || one != "8080/GRPC" {
		t.Errorf("captured %s and %s by order, want 8080/GRPC both", one, two)
	}
}

// BenchmarkCapturePorts: the decision per pod with 1,000 policies (100 with
// an HTTP fact, in other namespaces) and 1,000 Services.
func BenchmarkCapturePorts(b *testing.B) {
	var pols []ir.Policy
	var svcs []*corev1.Service
	for i := range 1000 {
		ns := fmt.Sprintf("ns-%d", i%100)
		pols = append(pols, capturePolicy(ns, fmt.Sprint("p", i), ir.PolicyAllow, i%10 == 0))
		svcs = append(svcs, svc(ns, fmt.Sprint("s", i), map[string]string{"app": fmt.Sprint("a", i)}, sp("http", 80, intstr.FromInt32(8080))))
	}
	c := NewCapture(pols, svcs)
	w := Workload{Namespace: "ns-0", Labels: map[string]string{"app": "a0"}}
	ns := map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh}
	b.ResetTimer()
	for range b.N {
		if len(c.Ports(w, ns)) != 1 {
			b.Fatal("not captured")
		}
	}
}
