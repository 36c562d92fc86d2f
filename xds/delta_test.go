package xds

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

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

// go-control-plane keeps none of the names a delta request subscribes to:
// the overlay has them, as a difference from the served snapshot's names —
// none of its own when the node subscribes to exactly those — and follows
// the node to its next snapshot when the names stay the same.
func TestDeltaSubscriptionSharesSnapshotNames(t *testing.T) {
	c := NewCache(nil, nil)
	var clas []*endpointv3.ClusterLoadAssignment
	var all []string
	for i := range 100 {
		n := fmt.Sprintf("outbound|9080||svc-%d.bookinfo.svc.cluster.local", i)
		clas = append(clas, &endpointv3.ClusterLoadAssignment{ClusterName: n})
		all = append(all, n)
	}
	set := encodeSet(clas)
	push := func(s *resourceSet) {
		t.Helper()
		if err := c.Push(newConfig("node-1", EnvoyNode, map[string]*resourceSet{resourcev3.EndpointType: s}), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	push(set)
	req := &discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "node-1"}, TypeUrl: resourcev3.EndpointType,
		ResourceNamesSubscribe: append(slices.Clone(all), "outbound|9080||gone.bookinfo.svc.cluster.local")}
	if err := c.OnStreamDeltaRequest(1, req); err != nil {
		t.Fatal(err)
	}
	if len(req.GetResourceNamesSubscribe()) != 0 {
		t.Errorf("go-control-plane is left %d names to keep", len(req.GetResourceNamesSubscribe()))
	}
	ov := c.streams[streamID{true, 1}].overlays[resourcev3.EndpointType]
	same := func(m map[string]string) bool {
		return reflect.ValueOf(ov.names.base).UnsafePointer() == reflect.ValueOf(m).UnsafePointer()
	}
	if !same(set.versions) || len(ov.names.minus) != 0 || len(ov.names.plus) != 1 || ov.names.len() != 101 {
		t.Fatalf("names: shared base %v, %d removed, %d of its own, %d in all", same(set.versions), len(ov.names.minus), len(ov.names.plus), ov.names.len())
	}
	// An assignment changes: same names, the subscription follows.
	changed := proto.Clone(clas[7]).(*endpointv3.ClusterLoadAssignment)
	changed.Endpoints = []*endpointv3.LocalityLbEndpoints{{}}
	next := with(set, []*endpointv3.ClusterLoadAssignment{changed})
	push(next)
	if !same(next.versions) {
		t.Error("the subscription still refers to the names of the snapshot the node no longer has")
	}
	// A cluster comes: other names; the subscription stays where it was.
	more := with(next, []*endpointv3.ClusterLoadAssignment{{ClusterName: "outbound|9080||new.bookinfo.svc.cluster.local"}})
	push(more)
	if !same(next.versions) || ov.names.len() != 101 {
		t.Error("the subscription moved to a snapshot with other names")
	}
}

// nameSet is a set: whatever the base, adds and removes give what a plain
// map gives, and rebasing never changes the members.
func TestNameSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	universe := make([]string, 300)
	for i := range universe {
		universe[i] = fmt.Sprintf("n%d", i)
	}
	base := func() (map[string]string, *keySet) {
		m := map[string]string{}
		for _, n := range universe[:100+rng.IntN(200)] {
			m[n] = "v"
		}
		return m, &keySet{}
	}
	var s nameSet
	want := map[string]bool{}
	for step := range 3000 {
		n := universe[rng.IntN(len(universe))]
		switch op := rng.IntN(10); {
		case op < 5:
			s.add(n)
			want[n] = true
		case op < 9:
			s.remove(n)
			delete(want, n)
		default:
			s.maybeRebase(base())
		}
		if s.len() != len(want) {
			t.Fatalf("step %d: %d names, want %d", step, s.len(), len(want))
		}
		got := map[string]bool{}
		for n := range s.all {
			got[n] = true
		}
		if !maps.Equal(got, want) {
			t.Fatalf("step %d: names differ", step)
		}
		for _, n := range universe {
			if s.has(n) != want[n] {
				t.Fatalf("step %d: has(%s) = %v", step, n, s.has(n))
			}
		}
	}
}

// The overlay's subscription state is go-control-plane's: it holds the
// names and wildcard state, and every response is what go-control-plane's
// own subscription handling gives; the snapshot version maps it shares
// (as what the node holds, and as the base of its names) are never
// written to.
func TestDeltaOverlayMatchesGoControlPlane(t *testing.T) {
	cla := func(names ...string) *resourceSet {
		var es []*endpointv3.ClusterLoadAssignment
		for _, n := range names {
			es = append(es, &endpointv3.ClusterLoadAssignment{ClusterName: n})
		}
		return encodeSet(es)
	}
	snapOf := func(s *resourceSet) *cachev3.Snapshot {
		return snapshot(map[string]*resourceSet{resourcev3.EndpointType: s})
	}
	type outcome struct{ send, removed []string }
	outcomeOf := func(r *deltaResponse) *outcome {
		if r == nil {
			return nil
		}
		return &outcome{names(r), r.mustResp().GetRemovedResources()}
	}
	// run follows a sequence of requests against snapshots with
	// go-control-plane's subscription and with the overlay.
	type request struct {
		name                   string
		set                    *resourceSet
		subscribe, unsubscribe []string
	}
	run := func(t *testing.T, first []string, steps []request) (ours stream.Subscription) {
		t.Helper()
		var frozen []map[string]string
		var sets []*resourceSet
		for _, st := range steps {
			if !slices.Contains(sets, st.set) {
				sets = append(sets, st.set)
				frozen = append(frozen, maps.Clone(st.set.versions))
			}
		}
		ref := stream.NewDeltaSubscription(first, nil, nil, true)
		ours = stream.NewDeltaSubscription(onlyWildcard(first), nil, nil, true)
		ov := newOverlay()
		ov.apply(first, nil, steps[0].set.versions, steps[0].set.keys)
		nonce := ""
		for i, st := range steps {
			if i > 0 {
				ref.UpdateResourceSubscriptions(st.subscribe, st.unsubscribe)
				ours.UpdateResourceSubscriptions(onlyWildcard(st.subscribe), onlyWildcard(st.unsubscribe))
				ov.apply(st.subscribe, st.unsubscribe, st.set.versions, st.set.keys)
			}
			got := map[string]struct{}{}
			for n := range ov.names.all {
				got[n] = struct{}{}
			}
			if !maps.Equal(ref.SubscribedResources(), got) || ref.IsWildcard() != ov.wildcard {
				t.Fatalf("%s: subscribed %v (wildcard %v), go-control-plane's %v (%v)", st.name, got, ov.wildcard, ref.SubscribedResources(), ref.IsWildcard())
			}
			req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: nonce}
			snap := snapOf(st.set)
			want, have := deltaFor(req, &ref, snap, nil), deltaFor(req, &ours, snap, ov)
			if w, g := outcomeOf(want), outcomeOf(have); !reflect.DeepEqual(w, g) {
				t.Fatalf("%s: got %+v, go-control-plane's handling gives %+v", st.name, g, w)
			}
			if want != nil {
				ref.SetReturnedResources(want.GetNextVersionMap())
				ours.SetReturnedResources(have.GetNextVersionMap())
				nonce += "1"
			}
		}
		for i, s := range sets {
			if !reflect.DeepEqual(frozen[i], s.versions) {
				t.Error("a snapshot's version map was written to")
			}
		}
		return ours
	}
	for _, wildcard := range []bool{false, true} {
		t.Run(map[bool]string{false: "named", true: "wildcard"}[wildcard], func(t *testing.T) {
			s1, s2 := cla("a", "b", "c"), cla("a", "b")
			var first []string
			if !wildcard {
				first = []string{"a", "b", "c"}
			}
			ours := run(t, first, []request{
				{name: "initial", set: s1},
				{"unsubscribe b", s1, nil, []string{"b"}},
				{"nothing changed", s1, nil, nil},
				{"subscribe b again", s1, []string{"b"}, nil},
				{"unsubscribe c", s1, nil, []string{"c"}},
				{"c gone", s2, nil, nil},
				{"subscribe c again, gone", s2, []string{"c"}, nil},
				{"unsubscribe a and c", s2, nil, []string{"a", "c"}},
				{"subscribe a and d", s1, []string{"a", "d"}, nil},
				{"subscribe and unsubscribe b at once", s1, []string{"b"}, []string{"b"}},
				{"unsubscribe d, then everything explicit", s2, nil, []string{"d", "*"}},
				{"wildcard again", s1, []string{"*"}, nil},
			})
			if len(ours.SubscribedResources()) != 0 {
				t.Errorf("go-control-plane's subscription keeps names: %v", ours.SubscribedResources())
			}
		})
	}
	// Random requests over sets large enough to be rebased on.
	t.Run("random", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		universe := make([]string, 200)
		for i := range universe {
			universe[i] = fmt.Sprintf("c%03d", i)
		}
		var sets []*resourceSet
		for range 4 {
			sets = append(sets, cla(universe[rng.IntN(50):100+rng.IntN(100)]...))
		}
		pick := func(max int) []string {
			var out []string
			for range rng.IntN(max) {
				out = append(out, universe[rng.IntN(len(universe))])
			}
			if rng.IntN(20) == 0 {
				out = append(out, "*")
			}
			return out
		}
		for r := range 20 {
			var first []string
			if r%4 != 0 {
				first = universe[:rng.IntN(150)]
			}
			steps := []request{{name: "initial", set: sets[0]}}
			for i := range 60 {
				steps = append(steps, request{fmt.Sprintf("run %d step %d", r, i), sets[rng.IntN(len(sets))], pick(90), pick(30)})
			}
			run(t, first, steps)
		}
	})
}
