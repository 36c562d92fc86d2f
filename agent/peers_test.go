//go:build linux

package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testNode(name, ip string, cidrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
	}
	return n
}

// TestPeerNodes: which Nodes get a route to their pod CIDR, and which are
// left out (and why), including Nodes whose pod CIDR would draw traffic
// that is not their pods'.
func TestPeerNodes(t *testing.T) {
	self := netip.MustParsePrefix("10.244.1.0/24")
	p := func(name, ip, cidr string) peerNode {
		return peerNode{Name: name, IP: netip.MustParseAddr(ip), CIDR: netip.MustParsePrefix(cidr)}
	}
	tests := map[string]struct {
		nodes       []*corev1.Node
		want        []peerNode
		wantSkipped []string
	}{
		"two other nodes, self left out": {
			nodes: []*corev1.Node{testNode("me", "192.168.0.1", "10.244.1.0/24"), testNode("b", "192.168.0.3", "10.244.3.0/24"), testNode("a", "192.168.0.2", "10.244.2.0/24")},
			want:  []peerNode{p("a", "192.168.0.2", "10.244.2.0/24"), p("b", "192.168.0.3", "10.244.3.0/24")},
		},
		"dual-stack: the IPv4 CIDR and InternalIP": {
			nodes: []*corev1.Node{func() *corev1.Node {
				n := testNode("a", "fd00::2", "fd00:10:244:2::/64", "10.244.2.0/24")
				n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.168.0.2"})
				return n
			}()},
			want: []peerNode{p("a", "192.168.0.2", "10.244.2.0/24")},
		},
		"an unmasked CIDR is masked": {
			nodes: []*corev1.Node{testNode("a", "192.168.0.2", "10.244.2.7/24")},
			want:  []peerNode{p("a", "192.168.0.2", "10.244.2.0/24")},
		},
		"no InternalIP (ExternalIP only), no pod CIDR": {
			nodes: []*corev1.Node{
				func() *corev1.Node {
					n := testNode("ext", "", "10.244.2.0/24")
					n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: "203.0.113.2"}}
					return n
				}(),
				testNode("nocidr", "192.168.0.3"),
				testNode("v6only", "192.168.0.4", "fd00:10:244:4::/64"),
				testNode("loopback", "127.0.0.1", "10.244.5.0/24"),
			},
			wantSkipped: []string{"ext", "loopback", "nocidr", "v6only"},
		},
		"a CIDR overlapping this node's is not routed away": {
			nodes:       []*corev1.Node{testNode("thief", "192.168.0.9", "10.244.0.0/16"), testNode("a", "192.168.0.2", "10.244.2.0/24")},
			want:        []peerNode{p("a", "192.168.0.2", "10.244.2.0/24")},
			wantSkipped: []string{"thief"},
		},
		"two nodes claiming overlapping CIDRs: neither": {
			nodes:       []*corev1.Node{testNode("a", "192.168.0.2", "10.244.2.0/24"), testNode("b", "192.168.0.3", "10.244.2.128/25"), testNode("c", "192.168.0.4", "10.244.4.0/24")},
			want:        []peerNode{p("c", "192.168.0.4", "10.244.4.0/24")},
			wantSkipped: []string{"a", "b"},
		},
		"an address in this node's pod CIDR (one of its pods as next hop)": {
			nodes:       []*corev1.Node{testNode("a", "192.168.0.2", "10.244.2.0/24"), testNode("local-pod", "10.244.1.7", "10.244.7.0/24")},
			want:        []peerNode{p("a", "192.168.0.2", "10.244.2.0/24")},
			wantSkipped: []string{"local-pod"},
		},
		"an address in another node's pod CIDR: both left out (which is wrong is not known)": {
			nodes:       []*corev1.Node{testNode("a", "192.168.0.2", "10.244.2.0/24"), testNode("remote-pod", "10.244.2.9", "10.244.9.0/24"), testNode("c", "192.168.0.4", "10.244.4.0/24")},
			want:        []peerNode{p("c", "192.168.0.4", "10.244.4.0/24")},
			wantSkipped: []string{"a", "remote-pod"},
		},
		"two nodes with one address: both left out": {
			nodes:       []*corev1.Node{testNode("twin-1", "192.168.0.5", "10.244.5.0/24"), testNode("twin-2", "192.168.0.5", "10.244.6.0/24"), testNode("c", "192.168.0.4", "10.244.4.0/24")},
			want:        []peerNode{p("c", "192.168.0.4", "10.244.4.0/24")},
			wantSkipped: []string{"twin-1", "twin-2"},
		},
		"a CIDR containing a node's address (0.0.0.0/1, the underlay)": {
			nodes:       []*corev1.Node{testNode("me", "192.168.0.1", "10.244.1.0/24"), testNode("greedy", "192.168.0.9", "128.0.0.0/1"), testNode("under", "192.168.0.8", "192.168.0.0/24")},
			wantSkipped: []string{"greedy", "under"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, skipped := peerNodes(tc.nodes, "me", self)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("peers (-want +got):\n%s", diff)
			}
			var names []string
			for n := range skipped {
				names = append(names, n)
			}
			slices.Sort(names)
			if diff := cmp.Diff(tc.wantSkipped, names); diff != "" {
				t.Errorf("skipped (-want +got):\n%s (reasons %v)", diff, skipped)
			}
		})
	}
}

// TestWantRoutes: the routes, neighbours and FDB entries of each mode.
func TestWantRoutes(t *testing.T) {
	peers := []peerNode{
		{Name: "a", IP: netip.MustParseAddr("192.168.0.2"), CIDR: netip.MustParsePrefix("10.244.2.0/24")},
		{Name: "b", IP: netip.MustParseAddr("192.168.0.3"), CIDR: netip.MustParsePrefix("10.244.3.0/24")},
	}
	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	tests := map[string]struct {
		mode string
		want routeSet
	}{
		"native: CIDR via node address": {RoutingNative, routeSet{
			routes: map[netip.Prefix]netip.Addr{pfx("10.244.2.0/24"): addr("192.168.0.2"), pfx("10.244.3.0/24"): addr("192.168.0.3")},
			neigh:  map[netip.Addr]string{}, fdb: map[string]netip.Addr{}}},
		"vxlan: CIDR via its network address, whose MAC is derived and sent to the node": {RoutingVXLAN, routeSet{
			routes: map[netip.Prefix]netip.Addr{pfx("10.244.2.0/24"): addr("10.244.2.0"), pfx("10.244.3.0/24"): addr("10.244.3.0")},
			neigh:  map[netip.Addr]string{addr("10.244.2.0"): "0e:6e:0a:f4:02:00", addr("10.244.3.0"): "0e:6e:0a:f4:03:00"},
			fdb:    map[string]netip.Addr{"0e:6e:0a:f4:02:00": addr("192.168.0.2"), "0e:6e:0a:f4:03:00": addr("192.168.0.3")}}},
		"none: nothing": {RoutingNone, routeSet{routes: map[netip.Prefix]netip.Addr{}, neigh: map[netip.Addr]string{}, fdb: map[string]netip.Addr{}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := wantRoutes(tc.mode, peers)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(routeSet{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestPodMTU: encapsulation's 50 bytes come off the uplink's MTU in VXLAN
// mode only.
func TestPodMTU(t *testing.T) {
	for name, tc := range map[string]struct {
		mode      string
		uplink    int
		wantPodMT int
	}{
		"native 1500": {RoutingNative, 1500, 1500},
		"native 9000": {RoutingNative, 9000, 9000},
		"vxlan 1500":  {RoutingVXLAN, 1500, 1450},
		"vxlan 9001":  {RoutingVXLAN, 9001, 8951},
		"none 1500":   {RoutingNone, 1500, 1500},
	} {
		t.Run(name, func(t *testing.T) {
			if got := podMTU(tc.mode, tc.uplink); got != tc.wantPodMT {
				t.Errorf("podMTU(%s, %d) = %d, want %d", tc.mode, tc.uplink, got, tc.wantPodMT)
			}
		})
	}
}
