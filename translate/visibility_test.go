package translate

import (
	"net/netip"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// twoNamespaces: api in a with a public DestinationRule (subsets v1, v2,
// RANDOM) and a public VirtualService sending everything to v1; namespace b
// has its own DestinationRule for api (subset v1, ROUND_ROBIN). Clients of
// a and b run on node-0.
const twoNamespaces = `
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: a}
spec:
  clusterIP: 10.96.0.10
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-v1, namespace: a, labels: {app: api, version: v1}}
spec: {nodeName: node-0, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: api-v2, namespace: a, labels: {app: api, version: v2}}
spec: {nodeName: node-0, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b}
spec: {nodeName: node-0, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.0.3}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: a}
spec:
  host: api
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-from-b, namespace: b}
spec:
  host: api.a.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: a}
spec:
  hosts: [api]
  http: [{route: [{destination: {host: api, subset: v1}}]}]
`

// On one node, the clients of namespaces a and b reach api through their
// own clusters: a's through Istio's outbound|8080|v1|api (a's rule,
// RANDOM), b's through the variant shaped by b's rule (ROUND_ROBIN), as
// their sidecars would (istiod PushContext.destinationRule: the client's
// namespace first). Both clusters are served to the node and pass
// validation.
func TestTwoNamespacesOneNode(t *testing.T) {
	res := forNodeYAML(t, "node-0", twoNamespaces)
	if res.HasErrors() {
		t.Fatalf("diagnostics: %v", res.Diagnostics)
	}
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range res.XDS.Clusters {
		clusters[c.GetName()] = c
	}
	host := "api.a.svc.cluster.local"
	cases := map[string]struct {
		src        string
		wantPrefix string
		wantLB     clusterv3.Cluster_LbPolicy
	}{
		"client in a": {src: "10.244.0.1", wantPrefix: "outbound|8080|v1|", wantLB: clusterv3.Cluster_RANDOM},
		"client in b": {src: "10.244.0.3", wantPrefix: "outbound|8080|v1~", wantLB: clusterv3.Cluster_ROUND_ROBIN},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			cluster := routedCluster(t, res, c.src, "10.96.0.10:8080", host+":8080")
			if !strings.HasPrefix(cluster, c.wantPrefix) || !strings.HasSuffix(cluster, "|"+host) {
				t.Errorf("routed to %s, want %s…|%s", cluster, c.wantPrefix, host)
			}
			cl := clusters[cluster]
			if cl == nil {
				t.Fatalf("cluster %s is not served to the node", cluster)
			}
			if cl.GetLbPolicy() != c.wantLB {
				t.Errorf("cluster %s balances %v, want %v", cluster, cl.GetLbPolicy(), c.wantLB)
			}
		})
	}
}

// routedCluster follows a request from src to dst with a Host header
// through the node's outbound listener (Envoy's chain selection) and its
// route configuration: the cluster of the first route.
func routedCluster(t *testing.T, res *Result, src, dst, authority string) string {
	t.Helper()
	var l *listenerv3.Listener
	for _, have := range res.XDS.Listeners {
		if have.GetName() == ir.OutboundListenerName {
			l = have
		}
	}
	fc, err := selectChain(l, conn{dst: netip.MustParseAddrPort(dst), alpn: "http/1.1", src: netip.MustParseAddr(src)})
	if err != nil || fc == nil {
		t.Fatalf("no chain for %s → %s: %v", src, dst, err)
	}
	rcName := chainHCM(t, fc).GetRds().GetRouteConfigName()
	for _, rc := range res.XDS.Routes {
		if rc.GetName() != rcName {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			for _, d := range vh.GetDomains() {
				if d == authority && len(vh.GetRoutes()) > 0 {
					return vh.GetRoutes()[0].GetRoute().GetCluster()
				}
			}
		}
	}
	t.Fatalf("route configuration %q (chain %s) has no virtual host for %s", rcName, fc.GetName(), authority)
	return ""
}
