package lbsync

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/bpf"
)

type svcOpt func(*corev1.Service)

func service(name string, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}}
	for _, o := range opts {
		o(s)
	}
	return s
}

func clusterIP(ip string) svcOpt {
	return func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = ip, []string{ip} }
}

func port(name string, proto corev1.Protocol, p, nodePort int32) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: name, Protocol: proto, Port: p, NodePort: nodePort})
	}
}

func svcType(t corev1.ServiceType) svcOpt { return func(s *corev1.Service) { s.Spec.Type = t } }

type epOpt func(*discoveryv1.Endpoint)

func cond(ready, serving, terminating *bool) epOpt {
	return func(e *discoveryv1.Endpoint) {
		e.Conditions = discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}
	}
}

func onNode(n string) epOpt { return func(e *discoveryv1.Endpoint) { e.NodeName = &n } }

func ep(ip string, opts ...epOpt) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{ip}}
	for _, o := range opts {
		o(&e)
	}
	return e
}

func slice(svc, name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name,
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: ports, Endpoints: eps}
}

func sp(name string, proto corev1.Protocol, p int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &p}
}

var (
	yes, no = ptr(true), ptr(false)
)

func ptr[T any](v T) *T { return &v }

func TestFrontends(t *testing.T) {
	local := corev1.ServiceInternalTrafficPolicyLocal
	tests := map[string]struct {
		in        Input
		want      Want
		wantDiags []string
	}{
		"ready endpoints only; nil conditions are ready": {
			in: Input{Services: []*corev1.Service{service("web", clusterIP("10.96.0.20"), port("http", "", 80, 0))},
				Slices: []*discoveryv1.EndpointSlice{slice("web", "web-1", []discoveryv1.EndpointPort{sp("http", corev1.ProtocolTCP, 8080)},
					ep("10.244.0.5"), ep("10.244.0.6", cond(yes, yes, no)), ep("10.244.0.7", cond(no, no, no)),
					ep("10.244.0.8", cond(no, yes, yes)))}},
			want: Want{tcp("10.96.0.20:80"): {be("10.244.0.5:8080", bpf.ProtoTCP), be("10.244.0.6:8080", bpf.ProtoTCP)}},
		},
		"serving-but-terminating only when none is ready": {
			in: Input{Services: []*corev1.Service{service("web", clusterIP("10.96.0.20"), port("http", "", 80, 0))},
				Slices: []*discoveryv1.EndpointSlice{slice("web", "web-1", []discoveryv1.EndpointPort{sp("http", corev1.ProtocolTCP, 8080)},
					ep("10.244.0.7", cond(no, no, no)), ep("10.244.0.8", cond(no, yes, yes)), ep("10.244.0.9", cond(no, no, yes)))}},
			want: Want{tcp("10.96.0.20:80"): {be("10.244.0.8:8080", bpf.ProtoTCP)}},
		},
		"no endpoint: the frontend refuses": {
			in:   Input{Services: []*corev1.Service{service("web", clusterIP("10.96.0.20"), port("", "", 80, 0))}},
			want: Want{tcp("10.96.0.20:80"): nil},
		},
		"ports matched by name and protocol, over several slices, duplicates once": {
			in: Input{Services: []*corev1.Service{service("dns", clusterIP("10.96.0.10"),
				port("dns", corev1.ProtocolUDP, 53, 0), port("dns-tcp", corev1.ProtocolTCP, 53, 0))},
				Slices: []*discoveryv1.EndpointSlice{
					slice("dns", "dns-1", []discoveryv1.EndpointPort{sp("dns", corev1.ProtocolUDP, 5353), sp("dns-tcp", corev1.ProtocolTCP, 5354)}, ep("10.244.0.10")),
					slice("dns", "dns-2", []discoveryv1.EndpointPort{sp("dns", corev1.ProtocolUDP, 5353), sp("dns-tcp", corev1.ProtocolTCP, 5354)}, ep("10.244.0.11"), ep("10.244.0.10")),
					slice("other", "other-1", []discoveryv1.EndpointPort{sp("dns", corev1.ProtocolUDP, 53)}, ep("10.244.0.99")),
				}},
			want: Want{
				udp("10.96.0.10:53"): {be("10.244.0.10:5353", bpf.ProtoUDP), be("10.244.0.11:5353", bpf.ProtoUDP)},
				tcp("10.96.0.10:53"): {be("10.244.0.10:5354", bpf.ProtoTCP), be("10.244.0.11:5354", bpf.ProtoTCP)},
			},
		},
		"NodePort on the node's addresses, ClusterIP too": {
			in: Input{NodeIPs: []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("10.244.0.1")},
				Services: []*corev1.Service{service("np", svcType(corev1.ServiceTypeNodePort), clusterIP("10.96.0.30"), port("", "", 80, 30080))},
				Slices:   []*discoveryv1.EndpointSlice{slice("np", "np-1", []discoveryv1.EndpointPort{sp("", corev1.ProtocolTCP, 8080)}, ep("10.244.0.5"))}},
			want: Want{
				tcp("10.96.0.30:80"):      {be("10.244.0.5:8080", bpf.ProtoTCP)},
				tcp("192.168.1.10:30080"): {be("10.244.0.5:8080", bpf.ProtoTCP)},
				tcp("10.244.0.1:30080"):   {be("10.244.0.5:8080", bpf.ProtoTCP)},
			},
		},
		"internalTrafficPolicy Local: this node's endpoints for the ClusterIP": {
			in: Input{NodeName: "n1", NodeIPs: []netip.Addr{netip.MustParseAddr("192.168.1.10")},
				Services: []*corev1.Service{service("loc", svcType(corev1.ServiceTypeNodePort), clusterIP("10.96.0.40"), port("", "", 80, 30081),
					func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = &local })},
				Slices: []*discoveryv1.EndpointSlice{slice("loc", "loc-1", []discoveryv1.EndpointPort{sp("", corev1.ProtocolTCP, 8080)},
					ep("10.244.0.5", onNode("n1")), ep("10.244.1.5", onNode("n2")))}},
			want: Want{
				tcp("10.96.0.40:80"):      {be("10.244.0.5:8080", bpf.ProtoTCP)},
				tcp("192.168.1.10:30081"): {be("10.244.0.5:8080", bpf.ProtoTCP), be("10.244.1.5:8080", bpf.ProtoTCP)},
			},
		},
		"headless, ExternalName, IPv6 and external IPs are not frontends; SCTP is diagnosed": {
			in: Input{Services: []*corev1.Service{
				service("headless", clusterIP("None"), port("", "", 80, 0)),
				service("ext", svcType(corev1.ServiceTypeExternalName), port("", "", 80, 0)),
				service("v6", clusterIP("fd00::10"), port("", "", 80, 0)),
				service("exip", clusterIP("10.96.0.50"), port("", "", 80, 0), func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"8.8.8.8"} }),
				service("sctp", clusterIP("10.96.0.60"), port("", corev1.ProtocolSCTP, 80, 0)),
			}},
			want:      Want{tcp("10.96.0.50:80"): nil},
			wantDiags: []string{"Service ns/sctp: port 80: protocol SCTP is not load balanced at the socket (TCP and UDP are)"},
		},
		"IPv6 slices and endpoints without address are skipped": {
			in: Input{Services: []*corev1.Service{service("web", clusterIP("10.96.0.20"), port("", "", 80, 0))},
				Slices: []*discoveryv1.EndpointSlice{
					func() *discoveryv1.EndpointSlice {
						s := slice("web", "web-v6", []discoveryv1.EndpointPort{sp("", corev1.ProtocolTCP, 8080)}, ep("fd00::5"))
						s.AddressType = discoveryv1.AddressTypeIPv6
						return s
					}(),
					slice("web", "web-1", []discoveryv1.EndpointPort{sp("", corev1.ProtocolTCP, 8080)}, discoveryv1.Endpoint{}, ep("10.244.0.5")),
				}},
			want: Want{tcp("10.96.0.20:80"): {be("10.244.0.5:8080", bpf.ProtoTCP)}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, diags := Frontends(tc.in)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("frontends (-want +got):\n%s", diff)
			}
			var ds []string
			for _, d := range diags {
				ds = append(ds, d.String())
			}
			if diff := cmp.Diff(tc.wantDiags, ds); diff != "" {
				t.Errorf("diagnostics (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFit: the maps are bounded; a Service with more backends than fit
// (anyone who writes EndpointSlices can make one) refuses instead of
// pushing the small ones out, and is named.
func TestFit(t *testing.T) {
	many := func(n int) []Backend {
		out := make([]Backend, n)
		for i := range out {
			out[i] = be(fmt.Sprintf("10.%d.%d.%d:80", i>>16&255, i>>8&255, i&255), bpf.ProtoTCP)
		}
		return out
	}
	huge, dns, web := tcp("10.96.9.9:80"), udp("10.96.0.10:53"), tcp("10.96.0.20:80")
	tests := map[string]struct {
		in                  Want
		entries, backends   int
		want                map[Frontend]int // backends kept per frontend
		wantDiags           int
		wantDiagMentionsAll []string
	}{
		"65,536 backends for one Service: the others stay, it refuses": {
			in:      Want{huge: many(65536), dns: many(2), web: many(3)},
			entries: bpf.MaxLBServiceEntries, backends: bpf.MaxLBBackends,
			want:      map[Frontend]int{huge: 0, dns: 2, web: 3},
			wantDiags: 1, wantDiagMentionsAll: []string{"10.96.9.9:80/tcp", "65536 backends", "refused"},
		},
		"everything fits": {
			in: Want{dns: many(2), web: many(3)}, entries: 10, backends: 5,
			want: map[Frontend]int{dns: 2, web: 3},
		},
		"no room even for a master entry": {
			in: Want{dns: many(1), web: many(1), huge: many(1)}, entries: 4, backends: 10,
			want:      map[Frontend]int{dns: 1, web: 1},
			wantDiags: 1, wantDiagMentionsAll: []string{"maps are full", "10.96.9.9:80/tcp"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, diags := Fit(tc.in, tc.entries, tc.backends)
			gotN := map[Frontend]int{}
			for f, bs := range got {
				gotN[f] = len(bs)
			}
			if diff := cmp.Diff(tc.want, gotN); diff != "" {
				t.Errorf("kept (-want +got):\n%s", diff)
			}
			if len(diags) != tc.wantDiags {
				t.Fatalf("diagnostics %v, want %d", diags, tc.wantDiags)
			}
			for _, s := range tc.wantDiagMentionsAll {
				if !strings.Contains(diags[0].String(), s) {
					t.Errorf("diagnostic %q does not mention %q", diags[0], s)
				}
			}
		})
	}
}
