package authz

import (
	"fmt"
	"strings"
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// dr is a DestinationRule of namespace ns with the YAML spec.
func dr(t *testing.T, ns, name, spec string) *networkingv1.DestinationRule {
	t.Helper()
	d := &networkingv1.DestinationRule{}
	if err := yaml.Unmarshal([]byte("metadata: {namespace: "+ns+", name: "+name+"}\nspec: "+spec), d); err != nil {
		t.Fatalf("DestinationRule %s/%s: %v", ns, name, err)
	}
	return d
}

// mtlsPortsString is Ports as "PORT/PROTOCOL[/MODE][/mtls-only]".
func mtlsPortsString(ps []CapturedPort) string {
	if len(ps) == 0 {
		return "none"
	}
	var out []string
	for _, p := range ps {
		s := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.MTLS != "" {
			s += "/" + string(p.MTLS)
		}
		if p.MTLSOnly {
			s += "/mtls-only"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// TestMTLSCapturePorts: the ports the node Envoy terminates Istio mTLS on —
// a meshed pod's ports behind a Service a DestinationRule ISTIO_MUTUAL names
// (exact, short and wildcard hosts, from any namespace, root namespace
// mesh-wide rules, port-level settings, subsets selecting the pod), with
// the pod's effective PeerAuthentication mode (DISABLE: not captured);
// nothing without WithMTLS (mTLS off), nothing for pods nodemesh does not
// authorize. A port an HTTP policy captures keeps its protocol and gate
// relaxation; the others are MTLSOnly TCP.
func TestMTLSCapturePorts(t *testing.T) {
	meshedNS := map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh}
	web := map[string]string{"app": "web", "version": "v1"}
	webPod := Workload{Namespace: "shop", Labels: web, NamedPorts: []NamedPort{{Name: "web", Port: 8080}, {Name: "db", Port: 5432}}}
	webSvc := svc("shop", "web", map[string]string{"app": "web"}, sp("http", 80, intstr.FromInt32(8080)), sp("tcp-db", 5432, intstr.FromString("db")))
	udp := sp("dns", 53, intstr.FromInt32(53))
	udp.Protocol = corev1.ProtocolUDP
	udpSvc := svc("shop", "dns", map[string]string{"app": "web"}, udp)
	mutual := `{host: web, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}`
	tests := map[string]struct {
		drs      []string // "ns|spec"
		pas      []*securityv1.PeerAuthentication
		pols     []ir.Policy
		services []*corev1.Service
		pod      *Workload
		ns       map[string]string
		off      bool
		domain   string
		want     string
	}{
		"short host of the pod's namespace":                       {drs: []string{"shop|" + mutual}, want: "5432/TCP/PERMISSIVE/mtls-only 8080/TCP/PERMISSIVE/mtls-only"},
		"mTLS off: nothing":                                       {drs: []string{"shop|" + mutual}, off: true, want: "none"},
		"no DestinationRule":                                      {want: "none"},
		"the FQDN from another namespace":                         {drs: []string{"other|{host: web.shop.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"}, want: "5432/TCP/PERMISSIVE/mtls-only 8080/TCP/PERMISSIVE/mtls-only"},
		"a short host of another namespace names its own Service": {drs: []string{"other|" + mutual}, want: "none"},
		"mesh-wide *.local in the root namespace": {drs: []string{"istio-system|{host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"},
			want: "5432/TCP/PERMISSIVE/mtls-only 8080/TCP/PERMISSIVE/mtls-only"},
		"wildcard *":                          {drs: []string{"istio-system|{host: '*', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"}, want: "5432/TCP/PERMISSIVE/mtls-only 8080/TCP/PERMISSIVE/mtls-only"},
		"wildcard of the namespace":           {drs: []string{"istio-system|{host: '*.shop.svc.cluster.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"}, want: "5432/TCP/PERMISSIVE/mtls-only 8080/TCP/PERMISSIVE/mtls-only"},
		"wildcard of another namespace":       {drs: []string{"istio-system|{host: '*.other.svc.cluster.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"}, want: "none"},
		"another cluster domain":              {drs: []string{"istio-system|{host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"}, domain: "corp.example", want: "none"},
		"the FQDN in a custom cluster domain": {drs: []string{"shop|{host: web.shop.svc.corp.example, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"}, domain: "corp.example", want: "5432/TCP/PERMISSIVE/mtls-only 8080/TCP/PERMISSIVE/mtls-only"},
		"another host":                        {drs: []string{"shop|{host: api, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"}, want: "none"},
		"DISABLE":                             {drs: []string{"shop|{host: web, trafficPolicy: {tls: {mode: DISABLE}}}"}, want: "none"},
		"SIMPLE (the client's own TLS)":       {drs: []string{"shop|{host: web, trafficPolicy: {tls: {mode: SIMPLE}}}"}, want: "none"},
		"no TLS settings (auto mTLS: plaintext to a migrated pod)": {drs: []string{"shop|{host: web, trafficPolicy: {connectionPool: {tcp: {maxConnections: 10}}}}"}, want: "none"},
		"port-level ISTIO_MUTUAL on the Service port (80 → 8080)": {drs: []string{"shop|{host: web, trafficPolicy: {portLevelSettings: [{port: {number: 80}, tls: {mode: ISTIO_MUTUAL}}]}}"},
			want: "8080/TCP/PERMISSIVE/mtls-only"},
		"port-level on the container port number is not the Service port": {drs: []string{"shop|{host: web, trafficPolicy: {portLevelSettings: [{port: {number: 8080}, tls: {mode: ISTIO_MUTUAL}}]}}"},
			want: "none"},
		"port-level settings replace the TLS settings wholesale": {drs: []string{"shop|{host: web, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, portLevelSettings: [{port: {number: 80}, connectionPool: {tcp: {maxConnections: 1}}}]}}"},
			want: "5432/TCP/PERMISSIVE/mtls-only"},
		"a subset selecting the pod": {drs: []string{"shop|{host: web, subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}]}"},
			want: "5432/TCP/PERMISSIVE/mtls-only 8080/TCP/PERMISSIVE/mtls-only"},
		"a subset of other pods": {drs: []string{"shop|{host: web, subsets: [{name: v2, labels: {version: v2}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}]}"},
			want: "none"},
		"a subset's port-level setting": {drs: []string{"shop|{host: web, subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {portLevelSettings: [{port: {number: 5432}, tls: {mode: ISTIO_MUTUAL}}]}}]}"},
			want: "5432/TCP/PERMISSIVE/mtls-only"},
		"a subset's DISABLE does not uncapture what the host's default sends mTLS to": {drs: []string{"shop|{host: web, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}, subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: DISABLE}}}]}"},
			want: "5432/TCP/PERMISSIVE/mtls-only 8080/TCP/PERMISSIVE/mtls-only"},
		"PeerAuthentication STRICT": {drs: []string{"shop|" + mutual}, pas: []*securityv1.PeerAuthentication{pa("shop", "default", 1, nil, "STRICT")},
			want: "5432/TCP/STRICT/mtls-only 8080/TCP/STRICT/mtls-only"},
		"mesh-wide STRICT": {drs: []string{"shop|" + mutual}, pas: []*securityv1.PeerAuthentication{pa("istio-system", "default", 1, nil, "STRICT")},
			want: "5432/TCP/STRICT/mtls-only 8080/TCP/STRICT/mtls-only"},
		"PeerAuthentication DISABLE: nothing to terminate": {drs: []string{"shop|" + mutual}, pas: []*securityv1.PeerAuthentication{pa("shop", "default", 1, nil, "DISABLE")},
			want: "none"},
		"port-level DISABLE on one container port": {drs: []string{"shop|" + mutual}, pas: []*securityv1.PeerAuthentication{pa("shop", "web", 1, map[string]string{"app": "web"}, "STRICT", "8080=DISABLE")},
			want: "5432/TCP/STRICT/mtls-only"},
		"an HTTP policy's port keeps HTTP and is not mTLS-only": {drs: []string{"shop|" + mutual}, pols: []ir.Policy{capturePolicy("shop", "get", ir.PolicyAllow, true)},
			want: "5432/TCP/PERMISSIVE/mtls-only 8080/HTTP/PERMISSIVE"},
		"a pod with a sidecar is its sidecar's": {drs: []string{"shop|" + mutual}, pod: &Workload{Namespace: "shop", Labels: web, Sidecar: true}, want: "none"},
		"a namespace outside the mesh":          {drs: []string{"shop|" + mutual}, ns: map[string]string{}, want: "none"},
		"UDP ports are not captured": {drs: []string{"istio-system|{host: '*', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"}, services: []*corev1.Service{udpSvc},
			want: "none"},
		"a named targetPort the pod lacks": {drs: []string{"shop|" + mutual}, pod: &Workload{Namespace: "shop", Labels: web, NamedPorts: []NamedPort{{Name: "web", Port: 8080}}},
			want: "8080/TCP/PERMISSIVE/mtls-only"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var drs []*networkingv1.DestinationRule
			for i, d := range tc.drs {
				ns, spec, _ := strings.Cut(d, "|")
				drs = append(drs, dr(t, ns, fmt.Sprintf("dr%d", i), spec))
			}
			services := tc.services
			if services == nil {
				services = []*corev1.Service{webSvc}
			}
			pod := webPod
			if tc.pod != nil {
				pod = *tc.pod
			}
			ns := tc.ns
			if ns == nil {
				ns = meshedNS
			}
			c := NewCapture(tc.pols, services)
			if !tc.off {
				c.WithMTLS(MTLSTermination{DestinationRules: drs, PeerAuthn: NewPeerAuthentications(tc.pas, "", nil), ClusterDomain: tc.domain})
			}
			if got := mtlsPortsString(c.Ports(pod, ns)); got != tc.want {
				t.Errorf("ports %s, want %s", got, tc.want)
			}
		})
	}
}

// FuzzMTLSHostMatch: any DestinationRule host resolves and matches without
// panicking, and a host never matches a Service it does not name: the
// match is exact unless the rule's host is a wildcard.
func FuzzMTLSHostMatch(f *testing.F) {
	for _, h := range []string{"web", "*.local", "*", "web.shop.svc.cluster.local", "", ".", "*.", "**", "WEB"} {
		f.Add(h, "shop")
	}
	f.Fuzz(func(t *testing.T, host, ns string) {
		r := resolveHost(host, ns, "cluster.local")
		fqdn := "web.shop.svc.cluster.local"
		if hostMatches(r, fqdn) && !strings.HasPrefix(r, "*") && r != fqdn {
			t.Fatalf("host %q (resolved %q) matches %s", host, r, fqdn)
		}
	})
}
