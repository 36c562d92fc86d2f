package xds

import (
	"context"
	"maps"
	"slices"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// Delta xDS watches are answered by Cache itself rather than by
// go-control-plane's snapshot cache, for two costs that grow with nodes ×
// resources and made a push to 100 nodes of a 1,000-Service mesh take most
// of a second on two cores:
//
//   - on every snapshot change the snapshot cache diffs every open watch of
//     the node — every type, changed or not — against the whole resource
//     map (copied for the purpose), under one cache-wide lock: 8,000
//     clusters and assignments per node per push;
//   - every resource sent is hashed again (its version is recomputed from
//     its encoding although the snapshot carries it).
//
// Here a watch remembers the type version it was last compared with and is
// skipped while that type does not change, responses carry the versions the
// generation computed, and resources go out in the encoding made once per
// generation (wire). The protocol logic — what a subscription is sent and
// removed — is go-control-plane's createDeltaResponse, and the stream side
// (subscriptions, nonces) stays go-control-plane's delta server.

// deltaWatch is an open delta request of one type on one stream.
type deltaWatch struct {
	req *cachev3.DeltaRequest
	sub cachev3.Subscription
	out chan cachev3.DeltaResponse
	// checked is the type version the subscription was last found up to
	// date with; "" before any comparison.
	checked string
	// ov is the stream's overlay for the type (nil when the request did
	// not come through Cache.OnStreamDeltaRequest).
	ov *subscriptionOverlay
}

// deltaResponse is a delta response: what to send is decided when it is
// created, the message is built when the stream is about to send it (under
// the send budget, which the stream's interceptor gives back when the node
// answers it; budget.go).
type deltaResponse struct {
	req      *cachev3.DeltaRequest
	returned map[string]string
	typeURL  string
	version  string
	send     []string
	removed  []string
	items    map[string]types.ResourceWithTTL
	versions map[string]string
	budget   *sendBudget

	once sync.Once
	resp *discoveryv3.DeltaDiscoveryResponse
}

var _ cachev3.DeltaResponse = (*deltaResponse)(nil)

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discoveryv3.DeltaDiscoveryResponse, error) {
	r.once.Do(r.build)
	return r.resp, nil
}

func (r *deltaResponse) build() {
	var size int64
	for _, name := range r.send {
		if w, ok := r.items[name].Resource.(*wire); ok {
			size += int64(len(w.bytes))
		}
	}
	taken := r.budget.acquire(size)
	resp := &discoveryv3.DeltaDiscoveryResponse{
		TypeUrl:           r.typeURL,
		SystemVersionInfo: r.version,
		RemovedResources:  r.removed,
		Resources:         make([]*discoveryv3.Resource, 0, len(r.send)),
	}
	cloned := false
	for _, name := range r.send {
		var data []byte
		if w, ok := r.items[name].Resource.(*wire); ok {
			data = w.bytes
		} else {
			var err error
			if data, err = cachev3.MarshalResource(r.items[name].Resource); err != nil {
				// Validated resources always marshal; leave this one out
				// rather than fail the stream, and forget it was sent (in
				// a map of this response's own: it may be shared).
				if !cloned {
					r.returned, cloned = maps.Clone(r.returned), true
				}
				delete(r.returned, name)
				continue
			}
		}
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{
			Name:     name,
			Version:  r.versions[name],
			Resource: &anypb.Any{TypeUrl: r.typeURL, Value: data},
		})
	}
	r.resp = resp
	r.budget.hold(resp, taken)
}

func (r *deltaResponse) GetDeltaRequest() *cachev3.DeltaRequest  { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)       { return r.version, nil }
func (r *deltaResponse) GetResponseVersion() string              { return r.version }
func (r *deltaResponse) GetNextVersionMap() map[string]string    { return r.returned }
func (r *deltaResponse) GetReturnedResources() map[string]string { return r.returned }
func (r *deltaResponse) GetContext() context.Context             { return context.Background() }

// deltaFor computes what a subscription must be sent from a snapshot: the
// resources it lacks or holds in another version, and the ones it holds
// that are gone. It returns nil when there is nothing to send, except to the
// first request of a wildcard subscription, which Envoy needs answered
// (even empty) to finish initialising.
//
// The map of what the node holds after the response (go-control-plane keeps
// it per stream and type) is the snapshot's own version map whenever the
// node is to hold exactly the snapshot's resources — always for wildcard
// subscriptions, and for a node Envoy's EDS, which names every cluster —
// instead of a copy per node: at 10,000 Services those copies were about
// 4 MB per node. Sharing is only safe because go-control-plane never writes
// to the map: it would on unsubscriptions, which ov takes over (see
// subscriptionOverlay); without an overlay every response gets its own map.
func deltaFor(req *cachev3.DeltaRequest, sub cachev3.Subscription, snap *cachev3.Snapshot, ov *subscriptionOverlay) *deltaResponse {
	typeURL := req.GetTypeUrl()
	i := cachev3.GetResponseType(typeURL)
	if i == types.UnknownType {
		return nil
	}
	items, versions := snap.Resources[i].Items, snap.VersionMap[typeURL]
	returned := sub.ReturnedResources()
	changed := ov.holding()
	held := func(name string) (string, bool) {
		if again, ok := changed[name]; ok {
			return "", again
		}
		v, ok := returned[name]
		return v, ok
	}
	var send, removed []string
	var next map[string]string
	wildcard := ov.isWildcard(sub)
	if wildcard {
		for name := range items {
			if prev, ok := held(name); !ok || prev != versions[name] {
				send = append(send, name)
			}
		}
		for name := range returned {
			if _, ok := items[name]; !ok {
				if again, ok := changed[name]; !ok || again {
					removed = append(removed, name)
				}
			}
		}
		for name, again := range changed {
			if _, ok := returned[name]; !ok && again {
				if _, ok := items[name]; !ok {
					removed = append(removed, name)
				}
			}
		}
		if ov != nil {
			next = versions
		} else {
			next = maps.Clone(versions)
		}
	} else {
		covered := 0
		for name := range ov.subscribed(sub) {
			prev, found := held(name)
			if _, ok := items[name]; ok {
				covered++
				if !found || prev != versions[name] {
					send = append(send, name)
				}
			} else if found {
				removed = append(removed, name)
			}
		}
		if ov != nil && covered == len(items) {
			next = versions
		} else {
			next = make(map[string]string, covered)
			for name := range ov.subscribed(sub) {
				if v, ok := versions[name]; ok {
					next[name] = v
				}
			}
		}
	}
	if len(send) == 0 && len(removed) == 0 && (!wildcard || req.GetResponseNonce() != "") {
		return nil
	}
	ov.sent()
	slices.Sort(send)
	slices.Sort(removed)
	return &deltaResponse{req: req, returned: next, typeURL: typeURL, version: snap.Resources[i].Version,
		send: send, removed: removed, items: items, versions: versions}
}

// subscriptionOverlay is the state of a delta subscription nodemesh keeps
// itself rather than in go-control-plane's stream.Subscription, for memory
// that grows with nodes × resources:
//
//   - what a node subscribes to: a node Envoy names the assignment of every
//     cluster, and go-control-plane keeps those names in a map per stream
//     (1.7 MB per node at 10,000 Services). Here the names are a set kept
//     as a difference from a snapshot's version map (nameSet), which every
//     node subscribed to the same names shares;
//   - unsubscriptions: go-control-plane applies one by writing to the map of
//     what the node holds, which may be a snapshot's version map shared by
//     every node (deltaFor).
//
// So the cache takes every name out of a request's subscriptions and
// unsubscriptions ("*" aside) before go-control-plane sees it
// (Cache.OnStreamDeltaRequest) and applies them here, mirroring
// go-control-plane's UpdateResourceSubscriptions exactly
// (TestDeltaOverlayMatchesGoControlPlane holds the two side by side):
// legacy wildcard first, then subscriptions, then unsubscriptions; what the
// node is known to hold changes until the next response — an explicitly
// subscribed name of a wildcard subscription is marked for sending again
// (or reporting removed), any other is forgotten. go-control-plane's own
// subscription then only keeps what the node holds (ReturnedResources).
// Methods are nil-safe where deltaFor uses them (no overlay: the
// subscription is go-control-plane's). c.mu guards it.
type subscriptionOverlay struct {
	// legacy is legacy wildcard (go-control-plane's default for every
	// type): until a request subscribes to something, the subscription is
	// wildcard and requests that subscribe to nothing change nothing.
	legacy, wildcard bool
	// started is set by the first request.
	started bool
	names   nameSet
	// held are changes to what the node holds since the last response:
	// true = held in no version (send again), false = not held.
	held map[string]bool
}

func newOverlay() *subscriptionOverlay {
	return &subscriptionOverlay{legacy: true, held: map[string]bool{}}
}

// isWildcard says whether the subscription is wildcard: the overlay's, or
// go-control-plane's without one.
func (o *subscriptionOverlay) isWildcard(sub cachev3.Subscription) bool {
	if o == nil {
		return sub.IsWildcard()
	}
	return o.wildcard
}

// subscribed yields the names subscribed to explicitly.
func (o *subscriptionOverlay) subscribed(sub cachev3.Subscription) func(yield func(string) bool) {
	if o == nil {
		return maps.Keys(sub.SubscribedResources())
	}
	return o.names.all
}

// holding returns the changes to what the node holds (nil-safe).
func (o *subscriptionOverlay) holding() map[string]bool {
	if o == nil {
		return nil
	}
	return o.held
}

// sent forgets the changes to what the node holds: a response is being
// made, and what it says the node holds replaces them.
func (o *subscriptionOverlay) sent() {
	if o != nil {
		clear(o.held)
	}
}

// apply takes in a request's subscriptions and unsubscriptions ("*"
// included), as go-control-plane's UpdateResourceSubscriptions would.
// current is the version map of the type in the node's served snapshot (nil
// before it has one): the set of names is rebased on it when that makes it
// smaller.
func (o *subscriptionOverlay) apply(subscribe, unsubscribe []string, current map[string]string, keys *keySet) {
	if !o.started {
		// A stream's first request: wildcard when it names nothing.
		o.started, o.wildcard = true, len(subscribe) == 0
	}
	if o.legacy {
		if len(subscribe) == 0 {
			return
		}
		o.legacy = false // (wildcard stays what it was)
	}
	for _, n := range subscribe {
		if n == explicitWildcard {
			o.wildcard = true
			continue
		}
		o.names.add(n)
	}
	for _, n := range unsubscribe {
		if n == explicitWildcard {
			o.wildcard = false
			continue
		}
		o.held[n] = o.names.has(n) && o.wildcard
		o.names.remove(n)
	}
	o.names.maybeRebase(current, keys)
}

// nameSet is a set of names kept as the keys of a shared map (base, a
// snapshot's version map, never written) plus and minus a few names of its
// own. The zero value is empty.
type nameSet struct {
	base map[string]string
	// keys identifies base's names (nil: unknown); see repoint.
	keys        *keySet
	plus, minus map[string]struct{}
	// tried is the size of the difference when rebasing last did not
	// make it smaller; rebasing is tried again once it has doubled.
	tried int
}

func (s *nameSet) has(n string) bool {
	if _, ok := s.plus[n]; ok {
		return true
	}
	_, inBase := s.base[n]
	_, out := s.minus[n]
	return inBase && !out
}

func (s *nameSet) add(n string) {
	if _, ok := s.base[n]; ok {
		delete(s.minus, n)
		return
	}
	if s.plus == nil {
		s.plus = map[string]struct{}{}
	}
	s.plus[n] = struct{}{}
}

func (s *nameSet) remove(n string) {
	delete(s.plus, n)
	if _, ok := s.base[n]; ok {
		if s.minus == nil {
			s.minus = map[string]struct{}{}
		}
		s.minus[n] = struct{}{}
	}
}

func (s *nameSet) len() int { return len(s.base) - len(s.minus) + len(s.plus) }

// all yields every name of the set.
func (s *nameSet) all(yield func(string) bool) {
	for n := range s.base {
		if _, out := s.minus[n]; out {
			continue
		}
		if !yield(n) {
			return
		}
	}
	for n := range s.plus {
		if !yield(n) {
			return
		}
	}
}

// rebaseAt is the size of a set's difference from its base from which
// rebasing it is tried: below it, the difference costs less than trying.
const rebaseAt = 64

// repoint moves the set's base to m when m has the same names (keys says
// so), so that a base a node no longer serves is not kept alive by it.
func (s *nameSet) repoint(m map[string]string, keys *keySet) {
	if s.keys != nil && s.keys == keys {
		s.base = m
	}
}

// maybeRebase keeps the set as a difference from m (whose names keys
// identifies, if known) when that difference is smaller than the current
// one: a node subscribed to every assignment of its snapshot then holds no
// name of its own.
func (s *nameSet) maybeRebase(m map[string]string, keys *keySet) {
	diff := len(s.plus) + len(s.minus)
	if m == nil || diff < rebaseAt || diff < 2*s.tried {
		return
	}
	var plus, minus map[string]struct{}
	for n := range s.all {
		if _, ok := m[n]; !ok {
			if plus == nil {
				plus = map[string]struct{}{}
			}
			plus[n] = struct{}{}
		}
	}
	for n := range m {
		if !s.has(n) {
			if minus == nil {
				minus = map[string]struct{}{}
			}
			minus[n] = struct{}{}
		}
	}
	if len(plus)+len(minus) >= diff {
		s.tried = diff
		return
	}
	s.base, s.keys, s.plus, s.minus, s.tried = m, keys, plus, minus, 0
}

const explicitWildcard = "*"

// pendingDelta is a delta request's stream and overlay, noted by
// OnStreamDeltaRequest for CreateDeltaWatch.
type pendingDelta struct {
	stream *streamState
	ov     *subscriptionOverlay
}

// takeSubscriptions moves a request's subscriptions and unsubscriptions
// (but "*") into the stream's overlay for the type (subscriptionOverlay says
// why), and notes which stream the request is on for CreateDeltaWatch, which
// go-control-plane calls next with the same request.
func (c *Cache) takeSubscriptions(s *streamState, req *discoveryv3.DeltaDiscoveryRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ov := s.overlays[req.GetTypeUrl()]
	if ov == nil {
		ov = newOverlay()
		s.overlays[req.GetTypeUrl()] = ov
	}
	current, keys := served(c.nodes[s.node], s, req.GetTypeUrl())
	ov.apply(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe(), current, keys)
	req.ResourceNamesSubscribe = onlyWildcard(req.GetResourceNamesSubscribe())
	req.ResourceNamesUnsubscribe = onlyWildcard(req.GetResourceNamesUnsubscribe())
	c.pending[req] = pendingDelta{stream: s, ov: ov}
}

// served is the version map of a type in a stream's served snapshot, and
// the identity of its names when known (nameSet).
func served(st *nodeState, s *streamState, typeURL string) (map[string]string, *keySet) {
	if st == nil || s.served == nil {
		return nil, nil
	}
	m := s.served.VersionMap[typeURL]
	if st.config != nil {
		if set := st.config.sets[typeURL]; set != nil && set.version == s.served.GetVersion(typeURL) {
			return m, set.keys
		}
	}
	return m, nil
}

// onlyWildcard keeps the "*" of a list of names, if any.
func onlyWildcard(names []string) []string {
	if slices.Contains(names, explicitWildcard) {
		return []string{explicitWildcard}
	}
	return nil
}

// CreateDeltaWatch answers a delta request from its stream's served
// snapshot at once when the subscription lacks something, or keeps the
// watch until the stream's snapshot changes that type.
func (c *Cache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[req]
	delete(c.pending, req)
	if !ok || c.streams[p.stream.id] != p.stream {
		// Not a request of a stream this cache registered (it closed).
		return nil, status.Error(codes.Unavailable, "stream not registered")
	}
	s := p.stream
	w := &deltaWatch{req: req, sub: sub, out: out, ov: p.ov}
	if s.served != nil && !s.holding(req.GetTypeUrl()) {
		if resp := deltaFor(req, sub, s.served, w.ov); resp != nil {
			c.sendDelta(s, w, resp)
			return func() {}, nil
		}
		w.checked = s.served.GetVersion(req.GetTypeUrl())
	}
	if s.deltaWatches == nil {
		s.deltaWatches = map[*deltaWatch]bool{}
	}
	s.deltaWatches[w] = true
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(s.deltaWatches, w)
	}, nil
}

// holding says whether the stream is held where it is for a type: nothing
// of it is sent (streamType.held).
func (s *streamState) holding(typeURL string) bool {
	t := s.types[typeURL]
	return t != nil && t.held
}

// respondDelta answers a delta stream's open watches after its served
// snapshot changed, in ADS order (go-control-plane's: by response type).
// c.mu is held.
func (c *Cache) respondDelta(s *streamState) {
	if len(s.deltaWatches) == 0 || s.served == nil {
		return
	}
	watches := make([]*deltaWatch, 0, len(s.deltaWatches))
	for w := range s.deltaWatches {
		watches = append(watches, w)
	}
	slices.SortFunc(watches, func(a, b *deltaWatch) int {
		return int(cachev3.GetResponseType(a.req.GetTypeUrl())) - int(cachev3.GetResponseType(b.req.GetTypeUrl()))
	})
	for _, w := range watches {
		typeURL := w.req.GetTypeUrl()
		if s.holding(typeURL) {
			// Held: the watch waits, and is compared again once the
			// stream is served something it has not rejected.
			w.checked = ""
			continue
		}
		version := s.served.GetVersion(typeURL)
		if w.checked != "" && w.checked == version {
			continue // this type did not change
		}
		resp := deltaFor(w.req, w.sub, s.served, w.ov)
		if resp == nil {
			w.checked = version
			continue
		}
		delete(s.deltaWatches, w)
		c.sendDelta(s, w, resp)
	}
}

// sendDelta hands a response to the stream. A stream has one watch per
// type and each watch is answered once, so its channel (go-control-plane
// gives it room for two responses per type) never blocks; should it be
// full, the response is dropped and logged rather than stall every node.
func (c *Cache) sendDelta(s *streamState, w *deltaWatch, resp *deltaResponse) {
	resp.budget = c.budget
	select {
	case w.out <- resp:
	default:
		c.log.Error("delta response dropped: stream channel full", "node", s.node, "type", shortType(w.req.GetTypeUrl()))
	}
}
