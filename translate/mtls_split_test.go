package translate

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	netsetfsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/set_filter_state/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodemesh/nodemesh/internal/meshgen"
	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// classFixtures are the inputs of the source class tests (testdata/nodes,
// the namespace and source selector cases, bookinfo with classes, a
// generated mesh).
func classFixtures(t *testing.T) map[string]*Bag {
	t.Helper()
	load := func(paths ...string) *Bag {
		bag, diags, err := Load(paths, nil, "default")
		if err != nil || diags.HasErrors() {
			t.Fatalf("load %v: %v %v", paths, err, diags)
		}
		return bag
	}
	return map[string]*Bag{
		"source-classes":          load("testdata/nodes/source-classes.in.yaml"),
		"namespaces":              load("testdata/services/namespaces.in.yaml"),
		"source-selectors":        load("testdata/virtualservice/source-selectors.in.yaml"),
		"bookinfo+source-classes": load("../samples/bookinfo", "testdata/nodes/source-classes.in.yaml"),
		"meshgen":                 meshgen.New(meshgen.Options{Services: 30, PodsPerService: 4, Nodes: 3, Namespaces: 3, OptIn: true}).Bag(),
	}
}

// wantIdentities are the client identities of a node's addresses, as the
// design says: pods of the node that are its clients, spiffe://cluster.local
// /ns/NS/sa/SA; an address two identities claim has none ("").
func wantIdentities(bag *Bag, node string) map[netip.Addr]string {
	optedIn := map[string]bool{}
	for _, ns := range bag.Namespaces {
		optedIn[ns.Name] = ns.Labels[istio.DataplaneModeLabel] == istio.DataplaneModeValue
	}
	out := map[netip.Addr]string{}
	for _, p := range bag.Pods {
		if p.NodeName != node || !optedIn[p.Namespace] || !istio.IsNodeClient(p) {
			continue
		}
		id := "spiffe://cluster.local/ns/" + p.Namespace + "/sa/" + p.IdentityAccount()
		for _, s := range p.IPs {
			a := netip.MustParseAddr(s)
			if have, ok := out[a]; ok && have != id {
				id = ""
			}
			out[a] = id
		}
	}
	return out
}

// withoutIdentity is a chain's filters without its identity filter.
func withoutIdentity(fc *listenerv3.FilterChain) []*listenerv3.Filter {
	return slices.DeleteFunc(slices.Clone(fc.GetFilters()), func(f *listenerv3.Filter) bool {
		return f.GetTypedConfig().MessageIs(&netsetfsv3.Config{})
	})
}

// connections are connections to every destination a listener's chains
// tell apart (with and without an HTTP protocol) from each source given.
func connections(l *listenerv3.Listener, sources []netip.Addr) []conn {
	var out []conn
	seen := map[string]bool{}
	for _, fc := range l.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		port := uint16(m.GetDestinationPort().GetValue())
		if port == 0 {
			port = 65000
		}
		dst := netip.MustParseAddr("10.255.255.254")
		if r := m.GetPrefixRanges(); len(r) > 0 {
			dst = netip.MustParseAddr(r[0].GetAddressPrefix())
		}
		for _, alpn := range []string{"", "http/1.1"} {
			c := conn{dst: netip.AddrPortFrom(dst, port), alpn: alpn}
			if k := c.dst.String() + alpn; !seen[k] {
				seen[k] = true
				for _, src := range sources {
					c.src = src
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// TestIdentitySplitKeepsRouting: over the source class fixtures, for every
// node, every destination the listener tells apart and every client (the
// node's client pods, other pods, strangers), the chain Envoy selects in
// the listener split by identity (Istio mTLS on) routes exactly as the
// chain it selects without the split (option off), and stores the client's
// identity — its own for the node's clients whenever the chain can reach a
// cluster with Istio mTLS, none for anyone else.
func TestIdentitySplitKeepsRouting(t *testing.T) {
	classClients := 0 // connections a class's chain served before the split
	defer func() {
		if classClients == 0 {
			t.Error("no connection was served by a class's chain: the fixtures test no class")
		}
	}()
	for name, bag := range classFixtures(t) {
		nodes := []string{"node-without-pods"}
		for _, p := range bag.Pods {
			if p.NodeName != "" && !slices.Contains(nodes, p.NodeName) {
				nodes = append(nodes, p.NodeName)
			}
		}
		for _, node := range nodes {
			t.Run(name+"/"+node, func(t *testing.T) {
				off := Translate(bag, nil, Options{Node: node})
				on := Translate(bag, nil, Options{Node: node, Istio: IstioOptions{IstioMTLS: true}})
				if off.HasErrors() || on.HasErrors() {
					t.Fatalf("errors: %v %v", off.Diagnostics, on.Diagnostics)
				}
				mtlsCluster := map[string]bool{}
				for _, c := range on.XDS.Clusters {
					mtlsCluster[c.GetName()] = c.GetTransportSocketMatcher() != nil
				}
				want := wantIdentities(bag, node)
				sources := []netip.Addr{netip.MustParseAddr("10.254.0.1"), netip.MustParseAddr("fd00:ffff::1")}
				for a := range want {
					sources = append(sources, a)
				}
				for _, p := range bag.Pods {
					for _, s := range p.IPs {
						if a := netip.MustParseAddr(s); !slices.Contains(sources, a) {
							sources = append(sources, a)
						}
					}
				}
				lOff, lOn := listenerOf(t, off.XDS), listenerOf(t, on.XDS)
				checked, identified := 0, 0
				for _, c := range connections(lOff, sources) {
					before, err := selectChain(lOff, c)
					if err != nil {
						t.Fatal(err)
					}
					after, err := selectChain(lOn, c)
					if err != nil {
						t.Fatalf("split listener: %v", err)
					}
					if !slices.EqualFunc(withoutIdentity(before), withoutIdentity(after), func(a, b *listenerv3.Filter) bool { return proto.Equal(a, b) }) {
						t.Fatalf("%v: chain %s before the split, %s after: they route differently", c, before.GetName(), after.GetName())
					}
					id, err := chainIdentity(after)
					if err != nil {
						t.Fatal(err)
					}
					reaches := false
					for _, f := range withoutIdentity(after) {
						var tp tcpproxyv3.TcpProxy
						switch {
						case f.GetTypedConfig().MessageIs(&tp):
							if err := f.GetTypedConfig().UnmarshalTo(&tp); err != nil {
								t.Fatal(err)
							}
							reaches = reaches || mtlsCluster[tp.GetCluster()]
							for _, w := range tp.GetWeightedClusters().GetClusters() {
								reaches = reaches || mtlsCluster[w.GetName()]
							}
						default: // HTTP: its routes may name any cluster
							reaches = true
						}
					}
					wantID := ""
					if reaches {
						wantID = want[c.src]
					}
					if id != wantID {
						t.Fatalf("%v: chain %s stores identity %q, want %q", c, after.GetName(), id, wantID)
					}
					checked++
					if len(before.GetFilterChainMatch().GetSourcePrefixRanges()) > 0 && id != "" {
						classClients++
					}
					if id != "" {
						identified++
					}
				}
				hasClient := false
				for _, id := range want {
					hasClient = hasClient || id != ""
				}
				if checked == 0 || hasClient && identified == 0 {
					t.Fatalf("%d connections checked, %d with an identity", checked, identified)
				}
			})
		}
	}
}

// TestClientIdentityDuplicateAddress: an address two identities claim (a
// stale pod and its successor with another service account) is given to
// neither — its connections carry no identity, so plaintext for auto-mTLS
// — while the other pods keep theirs; two pods of one identity at one
// address keep it.
func TestClientIdentityDuplicateAddress(t *testing.T) {
	pod := func(name, sa, ip string) string {
		return "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", namespace: shop, labels: {app: " + name + "}}\nspec: {nodeName: node-a, serviceAccountName: " + sa + ", containers: [{name: app, image: a}]}\nstatus: {phase: Running, podIP: " + ip + "}\n"
	}
	manifests := `apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}], selector: {app: s}}
---
apiVersion: v1
kind: Pod
metadata: {name: s-1, namespace: shop, labels: {app: s, security.istio.io/tlsMode: istio}}
spec: {nodeName: node-b, serviceAccountName: s, containers: [{name: app, image: a}, {name: istio-proxy, image: p}]}
status: {phase: Running, podIP: 10.2.0.1}
` + pod("old", "alice", "10.1.0.7") + pod("new", "bob", "10.1.0.7") + pod("bob-2", "bob", "10.1.0.8") +
		pod("twin-1", "carol", "10.1.0.9") + pod("twin-2", "carol", "10.1.0.9")
	res := translateMTLS(t, nil, manifests, "node-a", true)
	if res.HasErrors() {
		t.Fatalf("error diagnostics: %v", res.Diagnostics)
	}
	var cluster *clusterv3.Cluster
	for _, c := range res.XDS.Clusters {
		if c.GetName() == "outbound|80||s.shop.svc.cluster.local" {
			cluster = c
		}
	}
	if cluster == nil {
		t.Fatal("no cluster")
	}
	const prefix = "spiffe://cluster.local/ns/shop/sa/"
	for _, tc := range []struct {
		name, src, identity, socket string
	}{
		{"claimed by alice and bob", "10.1.0.7", "", envoy.SocketDisabled},
		{"bob's other pod", "10.1.0.8", prefix + "bob", envoy.SocketIstioPrefix + prefix + "bob"},
		{"two pods of carol", "10.1.0.9", prefix + "carol", envoy.SocketIstioPrefix + prefix + "carol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := clientIdentity(listenerOf(t, res.XDS), conn{dst: netip.MustParseAddrPort("10.96.0.10:80"), alpn: "http/1.1", src: netip.MustParseAddr(tc.src)})
			if err != nil {
				t.Fatal(err)
			}
			if id != tc.identity {
				t.Fatalf("identity %q, want %q", id, tc.identity)
			}
			sel, err := selectSocket(cluster, istioEndpoint, id)
			if err != nil {
				t.Fatal(err)
			}
			if sel.GetName() != tc.socket {
				t.Fatalf("socket %q, want %q", sel.GetName(), tc.socket)
			}
		})
	}
	// The rule where identities are computed, too.
	g, _ := New(mustBag(t, manifests), nil, Options{Istio: IstioOptions{IstioMTLS: true}})
	got := map[string][]string{}
	for _, id := range g.NodeClasses("node-a").identities {
		got[id.SPIFFE] = id.Addresses
	}
	wantIDs := map[string][]string{prefix + "bob": {"10.1.0.8"}, prefix + "carol": {"10.1.0.9"}}
	if len(got) != len(wantIDs) || !slices.Equal(got[prefix+"bob"], wantIDs[prefix+"bob"]) || !slices.Equal(got[prefix+"carol"], wantIDs[prefix+"carol"]) {
		t.Fatalf("node identities %v, want %v", got, wantIDs)
	}
}

func mustBag(t *testing.T, manifests string) *Bag {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in.yaml")
	if err := os.WriteFile(p, []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	bag, diags, err := Load([]string{p}, nil, "default")
	if err != nil || diags.HasErrors() {
		t.Fatalf("load: %v %v", err, diags)
	}
	return bag
}

// TestSelectChainEvaluator: the evaluator the tests above rely on follows
// Envoy's order — destination port, then address, then application
// protocol, then source — each step keeping the most specific, and falls
// to the default chain when the last step leaves nothing.
func TestSelectChainEvaluator(t *testing.T) {
	cidr := func(s string) []*corev3.CidrRange {
		p := netip.MustParsePrefix(s)
		return []*corev3.CidrRange{{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}}
	}
	l := &listenerv3.Listener{
		FilterChains: []*listenerv3.FilterChain{
			{Name: "port80", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80)}},
			{Name: "port80-http", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80), ApplicationProtocols: []string{"http/1.1"}}},
			{Name: "port80-http-client", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80), ApplicationProtocols: []string{"http/1.1"}, SourcePrefixRanges: cidr("10.1.0.5/32")}},
			{Name: "port80-vip", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80), PrefixRanges: cidr("10.96.0.1/32")}},
			{Name: "vip-client", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80), PrefixRanges: cidr("10.96.0.2/32"), SourcePrefixRanges: cidr("10.1.0.0/16")}},
			{Name: "any-port", FilterChainMatch: &listenerv3.FilterChainMatch{}},
		},
		DefaultFilterChain: &listenerv3.FilterChain{Name: "default"},
	}
	for _, tc := range []struct {
		name, dst, alpn, src, want string
	}{
		{"port, no protocol", "10.0.0.1:80", "", "10.1.0.5", "port80"},
		{"port and protocol", "10.0.0.1:80", "http/1.1", "10.1.0.6", "port80-http"},
		{"port, protocol and client", "10.0.0.1:80", "http/1.1", "10.1.0.5", "port80-http-client"},
		{"the address before the protocol", "10.96.0.1:80", "http/1.1", "10.1.0.5", "port80-vip"},
		{"no fallback after the address step", "10.96.0.2:80", "", "10.2.0.1", "default"},
		{"a wider source prefix", "10.96.0.2:80", "", "10.1.3.4", "vip-client"},
		{"another port", "10.0.0.1:81", "", "10.1.0.5", "any-port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc, err := selectChain(l, conn{dst: netip.MustParseAddrPort(tc.dst), alpn: tc.alpn, src: netip.MustParseAddr(tc.src)})
			if err != nil {
				t.Fatal(err)
			}
			if fc.GetName() != tc.want {
				t.Fatalf("selected %s, want %s", fc.GetName(), tc.want)
			}
		})
	}
	// Two chains with the same most specific match: Envoy rejects it.
	dup := proto.Clone(l).(*listenerv3.Listener)
	dup.FilterChains = append(dup.FilterChains, &listenerv3.FilterChain{Name: "twin", FilterChainMatch: proto.Clone(dup.FilterChains[0].GetFilterChainMatch()).(*listenerv3.FilterChainMatch)})
	if _, err := selectChain(dup, conn{dst: netip.MustParseAddrPort("10.0.0.1:80"), src: netip.MustParseAddr("10.1.0.5")}); err == nil {
		t.Fatal("two equally specific chains: no error")
	}
}
