package xds_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// TestGRPCClientRoutesServiceEntry: grpc-go's xDS client reaches a
// ServiceEntry host (STATIC, inline endpoints on named ports), and a
// VirtualService with DestinationRule subsets on that host moves its
// traffic, as they do for a Service.
func TestGRPCClientRoutesServiceEntry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bs := xdstest.StartBackends(t, xdstest.Loopback(60), "partner-v1", "partner-v2")
	const host = "partner.example"
	se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: "partner", Namespace: "default"}}
	proto.Merge(&se.Spec, &networking.ServiceEntry{Hosts: []string{host}, Resolution: networking.ServiceEntry_STATIC,
		Location: networking.ServiceEntry_MESH_INTERNAL,
		Ports:    []*networking.ServicePort{{Number: 7070, Name: "grpc", Protocol: "GRPC"}},
		Endpoints: []*networking.WorkloadEntry{
			{Address: bs.IP("partner-v1"), Ports: map[string]uint32{"grpc": uint32(bs.Port("partner-v1"))}, Labels: map[string]string{"version": "v1"}},
			{Address: bs.IP("partner-v2"), Ports: map[string]uint32{"grpc": uint32(bs.Port("partner-v2"))}, Labels: map[string]string{"version": "v2"}},
		}})
	dr := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Name: "partner", Namespace: "default"}}
	proto.Merge(&dr.Spec, &networking.DestinationRule{Host: host, Subsets: []*networking.Subset{
		{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}},
	}})
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "partner", Namespace: "default"}}
	proto.Merge(&vs.Spec, &networking.VirtualService{Hosts: []string{host}, Http: []*networking.HTTPRoute{{
		Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: host, Subset: "v2"}}},
	}}})
	bag := func(objs ...any) *translate.Bag {
		b := &translate.Bag{}
		for _, o := range objs {
			b.Add(o)
		}
		b.Sort()
		return b
	}
	var current atomic.Pointer[xds.Generation]
	current.Store(generation(t, 1, bag(se, dr)))
	cache := xds.NewCache(nil, nil)
	cache.Provider = func(n *corev3.Node) *xds.Config { return current.Load().ForNode(n.GetId(), xds.KindOf(n)) }
	client := xdstest.NewGRPCClient(t, xdstest.Serve(t, cache), "grpc-client-se")
	partner := client.Dial(host + ":7070")
	xdstest.WaitRouting(t, ctx, partner, 10*time.Second, "the entry's default route over both endpoints", func(t xdstest.Tally) bool {
		return t["partner-v1"] > 0 && t["partner-v2"] > 0 && t["partner-v1"]+t["partner-v2"] == t.Total()
	})

	current.Store(generation(t, 2, bag(se, dr, vs)))
	if err := cache.Push(current.Load().ForNode("grpc-client-se", xds.GRPCNode), time.Now()); err != nil {
		t.Fatal(err)
	}
	xdstest.WaitRouting(t, ctx, partner, 10*time.Second, "all traffic on subset v2 after the VirtualService", xdstest.Only("partner-v2"))
}
