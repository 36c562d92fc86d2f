package xds

import (
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"
	"unsafe"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/proto"
)

func names(r *deltaResponse) []string {
	var out []string
	resp, _ := r.GetDeltaDiscoveryResponse()
	for _, res := range resp.GetResources() {
		out = append(out, res.GetName())
	}
	return out
}

func (r *deltaResponse) mustResp() *discoveryv3.DeltaDiscoveryResponse {
	resp, _ := r.GetDeltaDiscoveryResponse()
	return resp
}

// deltaFor follows go-control-plane's delta protocol logic: wildcard
// subscriptions get every resource they lack or hold in another version and
// lose the ones gone; named subscriptions only what they name; nothing is
// sent when nothing changed, except the first answer to a wildcard request.
func TestDeltaFor(t *testing.T) {
	cluster := func(name string, lb uint32) *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			LbPolicy: clusterv3.Cluster_LbPolicy(lb)}
	}
	cla := func(name string) *endpointv3.ClusterLoadAssignment {
		return &endpointv3.ClusterLoadAssignment{ClusterName: name}
	}
	snap := func(clusters ...*clusterv3.Cluster) *cachev3.Snapshot {
		cs := clusters
		var es []*endpointv3.ClusterLoadAssignment
		for _, c := range cs {
			es = append(es, cla(c.GetName()))
		}
		return snapshot(map[string]*resourceSet{
			resourcev3.ClusterType:  encodeSet(cs),
			resourcev3.EndpointType: encodeSet(es),
		})
	}
	node := &corev3.Node{Id: "node-1"}
	wildcard := func(nonce string) *discoveryv3.DeltaDiscoveryRequest {
		return &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType, ResponseNonce: nonce}
	}

	s1 := snap(cluster("a", 0), cluster("b", 0))
	sub := stream.NewDeltaSubscription(nil, nil, nil, true)
	r := deltaFor(wildcard(""), &sub, s1, nil)
	if r == nil || !slices.Equal(names(r), []string{"a", "b"}) {
		t.Fatalf("first wildcard response: %v", r)
	}
	if r.mustResp().GetSystemVersionInfo() != s1.GetVersion(resourcev3.ClusterType) {
		t.Errorf("system version %q, want the type's %q", r.mustResp().GetSystemVersionInfo(), s1.GetVersion(resourcev3.ClusterType))
	}
	for _, res := range r.mustResp().GetResources() {
		got := &clusterv3.Cluster{}
		if err := res.GetResource().UnmarshalTo(got); err != nil {
			t.Fatal(err)
		}
		if want, err := decode(s1.Resources[cachev3.GetResponseType(resourcev3.ClusterType)].Items[res.GetName()].Resource); err != nil || !proto.Equal(got, want) {
			t.Errorf("%s: sent %v", res.GetName(), got)
		}
		if res.GetVersion() != s1.VersionMap[resourcev3.ClusterType][res.GetName()] {
			t.Errorf("%s: version %q, want the generation's", res.GetName(), res.GetVersion())
		}
	}
	sub.SetReturnedResources(r.GetReturnedResources())
	if r := deltaFor(wildcard("1"), &sub, s1, nil); r != nil {
		t.Errorf("nothing changed, yet sent %v", names(r))
	}

	// b changes, a goes, c arrives.
	s2 := snap(cluster("b", 1), cluster("c", 0))
	r = deltaFor(wildcard("1"), &sub, s2, nil)
	if r == nil || !slices.Equal(names(r), []string{"b", "c"}) || !slices.Equal(r.mustResp().GetRemovedResources(), []string{"a"}) {
		t.Fatalf("after a change: sent %v, removed %v", names(r), r.mustResp().GetRemovedResources())
	}
	sub.SetReturnedResources(r.GetReturnedResources())

	// An empty first answer still goes to a new wildcard subscription that
	// already holds everything (a reconnect with initial versions).
	resumed := stream.NewDeltaSubscription(nil, nil, r.GetReturnedResources(), true)
	if r := deltaFor(wildcard(""), &resumed, s2, nil); r == nil || len(names(r)) != 0 {
		t.Errorf("resumed wildcard: want an empty response, got %v", r)
	}

	// A named subscription gets only what it names, and learns of removals.
	eds := stream.NewDeltaSubscription([]string{"b", "x"}, nil, nil, false)
	req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"b", "x"}}
	r = deltaFor(req, &eds, s2, nil)
	if r == nil || !slices.Equal(names(r), []string{"b"}) {
		t.Fatalf("named subscription: %v", r)
	}
	eds.SetReturnedResources(r.GetReturnedResources())
	req.ResponseNonce = "2"
	if r := deltaFor(req, &eds, s2, nil); r != nil {
		t.Errorf("named subscription, nothing changed: sent %v", names(r))
	}
	s3 := snap(cluster("c", 0))
	if r := deltaFor(req, &eds, s3, nil); r == nil || len(names(r)) != 0 || !slices.Equal(r.mustResp().GetRemovedResources(), []string{"b"}) {
		t.Errorf("named subscription, resource gone: %+v", r)
	}
}

// A delta request's subscribed names are replaced by the served snapshot's
// own strings (the subscription keeps them for the stream's life); names
// the snapshot does not have are left as they are.
func TestDeltaRequestNamesInterned(t *testing.T) {
	c := NewCache(nil, nil)
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|9080||reviews.bookinfo.svc.cluster.local"}
	cfg := &Config{Node: "node-1", Snapshot: snapshot(map[string]*resourceSet{resourcev3.EndpointType: encodeSet([]*endpointv3.ClusterLoadAssignment{cla})})}
	if err := c.Push(cfg, time.Now()); err != nil {
		t.Fatal(err)
	}
	// Decoded from the wire, as the server receives it: strings of its own.
	data, err := proto.Marshal(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "node-1"}, TypeUrl: resourcev3.EndpointType,
		ResourceNamesSubscribe: []string{cla.GetClusterName(), "outbound|9080||gone.bookinfo.svc.cluster.local"}})
	if err != nil {
		t.Fatal(err)
	}
	req := &discoveryv3.DeltaDiscoveryRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		t.Fatal(err)
	}
	before := unsafe.StringData(req.ResourceNamesSubscribe[1])
	if err := c.OnStreamDeltaRequest(1, req); err != nil {
		t.Fatal(err)
	}
	w := cfg.Snapshot.GetResourcesAndTTL(resourcev3.EndpointType)[cla.GetClusterName()].Resource.(*wire)
	if unsafe.StringData(req.ResourceNamesSubscribe[0]) != unsafe.StringData(w.name) {
		t.Error("subscribed name not replaced by the snapshot's")
	}
	if req.ResourceNamesSubscribe[0] != cla.GetClusterName() || unsafe.StringData(req.ResourceNamesSubscribe[1]) != before {
		t.Errorf("names changed: %q", req.ResourceNamesSubscribe)
	}
}

// Sharing the snapshot's version map as what a node holds is invisible on
// the wire: with unsubscriptions taken out of the requests and applied by
// the overlay, every response is what go-control-plane's own subscription
// handling gives, and the shared map is never written to.
func TestDeltaOverlayMatchesGoControlPlane(t *testing.T) {
	cla := func(names ...string) *cachev3.Snapshot {
		var es []*endpointv3.ClusterLoadAssignment
		for _, n := range names {
			es = append(es, &endpointv3.ClusterLoadAssignment{ClusterName: n})
		}
		return snapshot(map[string]*resourceSet{resourcev3.EndpointType: encodeSet(es)})
	}
	type outcome struct{ send, removed []string }
	outcomeOf := func(r *deltaResponse) *outcome {
		if r == nil {
			return nil
		}
		return &outcome{names(r), r.mustResp().GetRemovedResources()}
	}
	for _, wildcard := range []bool{false, true} {
		t.Run(map[bool]string{false: "named", true: "wildcard"}[wildcard], func(t *testing.T) {
			s1, s2 := cla("a", "b", "c"), cla("a", "b")
			frozen := []map[string]string{maps.Clone(s1.VersionMap[resourcev3.EndpointType]), maps.Clone(s2.VersionMap[resourcev3.EndpointType])}
			var first []string
			if !wildcard {
				first = []string{"a", "b", "c"}
			}
			ref := stream.NewDeltaSubscription(first, nil, nil, true)
			ours := stream.NewDeltaSubscription(first, nil, nil, true)
			ov := newOverlay()
			ov.apply(first, nil)
			ov.saw(&ours)
			nonce := ""
			step := func(name string, snap *cachev3.Snapshot, subscribe, unsubscribe []string) {
				t.Helper()
				ref.UpdateResourceSubscriptions(subscribe, unsubscribe)
				ov.apply(subscribe, unsubscribe)
				var kept []string // unsubscriptions taken out, but "*"
				if slices.Contains(unsubscribe, "*") {
					kept = []string{"*"}
				}
				ours.UpdateResourceSubscriptions(subscribe, kept)
				ov.saw(&ours)
				req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: nonce}
				if !maps.Equal(ref.SubscribedResources(), ours.SubscribedResources()) || ref.IsWildcard() != ours.IsWildcard() {
					t.Fatalf("%s: subscribed %v (wildcard %v), go-control-plane's %v (%v)", name,
						ours.SubscribedResources(), ours.IsWildcard(), ref.SubscribedResources(), ref.IsWildcard())
				}
				want, got := deltaFor(req, &ref, snap, nil), deltaFor(req, &ours, snap, ov)
				if w, g := outcomeOf(want), outcomeOf(got); !reflect.DeepEqual(w, g) {
					t.Fatalf("%s: got %+v, go-control-plane's handling gives %+v", name, g, w)
				}
				if want != nil {
					ref.SetReturnedResources(want.GetNextVersionMap())
					ours.SetReturnedResources(got.GetNextVersionMap())
					nonce += "1"
				}
			}
			step("initial", s1, nil, nil)
			shared := reflect.ValueOf(ours.ReturnedResources()).UnsafePointer() == reflect.ValueOf(s1.VersionMap[resourcev3.EndpointType]).UnsafePointer()
			if !shared {
				t.Error("the node's record is a copy, not the snapshot's version map")
			}
			step("unsubscribe b", s1, nil, []string{"b"})
			step("nothing changed", s1, nil, nil)
			step("subscribe b again", s1, []string{"b"}, nil)
			step("unsubscribe c", s1, nil, []string{"c"})
			step("c gone", s2, nil, nil)
			step("subscribe c again, gone", s2, []string{"c"}, nil)
			step("unsubscribe a and c", s2, nil, []string{"a", "c"})
			step("subscribe a and d", s1, []string{"a", "d"}, nil)
			step("subscribe and unsubscribe b at once", s1, []string{"b"}, []string{"b"})
			step("unsubscribe d, then everything explicit", s2, nil, []string{"d", "*"})
			step("wildcard again", s1, []string{"*"}, nil)
			if !reflect.DeepEqual(frozen[0], s1.VersionMap[resourcev3.EndpointType]) || !reflect.DeepEqual(frozen[1], s2.VersionMap[resourcev3.EndpointType]) {
				t.Error("a snapshot's version map was written to")
			}
		})
	}
}
