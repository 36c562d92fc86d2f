package xds

import (
	"context"
	"slices"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
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
	for _, name := range r.send {
		var data []byte
		if w, ok := r.items[name].Resource.(*wire); ok {
			data = w.bytes
		} else {
			var err error
			if data, err = cachev3.MarshalResource(r.items[name].Resource); err != nil {
				// Validated resources always marshal; leave this one out
				// rather than fail the stream, and forget it was sent.
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
func deltaFor(req *cachev3.DeltaRequest, sub cachev3.Subscription, snap *cachev3.Snapshot) *deltaResponse {
	typeURL := req.GetTypeUrl()
	i := cachev3.GetResponseType(typeURL)
	if i == types.UnknownType {
		return nil
	}
	items, versions := snap.Resources[i].Items, snap.VersionMap[typeURL]
	returned := sub.ReturnedResources()
	var send, removed []string
	var next map[string]string
	if sub.IsWildcard() {
		next = make(map[string]string, len(items))
		for name := range items {
			v := versions[name]
			next[name] = v
			if prev, ok := returned[name]; !ok || prev != v {
				send = append(send, name)
			}
		}
		for name := range returned {
			if _, ok := items[name]; !ok {
				removed = append(removed, name)
			}
		}
	} else {
		subscribed := sub.SubscribedResources()
		next = make(map[string]string, len(subscribed))
		for name := range subscribed {
			prev, found := returned[name]
			if _, ok := items[name]; ok {
				v := versions[name]
				if !found || prev != v {
					send = append(send, name)
				}
				next[name] = v
			} else if found {
				removed = append(removed, name)
			}
		}
	}
	if len(send) == 0 && len(removed) == 0 && (!sub.IsWildcard() || req.GetResponseNonce() != "") {
		return nil
	}
	slices.Sort(send)
	slices.Sort(removed)
	return &deltaResponse{req: req, returned: next, typeURL: typeURL, version: snap.Resources[i].Version,
		send: send, removed: removed, items: items, versions: versions}
}

// CreateDeltaWatch answers a delta request from the node's served snapshot
// at once when the subscription lacks something, or keeps the watch until a
// push changes its type.
func (c *Cache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	node := req.GetNode().GetId()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state(node)
	w := &deltaWatch{req: req, sub: sub, out: out}
	if st.current != nil {
		if resp := deltaFor(req, sub, st.current); resp != nil {
			c.sendDelta(node, w, resp)
			return func() {}, nil
		}
		w.checked = st.current.GetVersion(req.GetTypeUrl())
	}
	if st.deltaWatches == nil {
		st.deltaWatches = map[*deltaWatch]bool{}
	}
	st.deltaWatches[w] = true
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if st := c.nodes[node]; st != nil {
			delete(st.deltaWatches, w)
		}
	}, nil
}

// respondDelta answers a node's open delta watches after its served
// snapshot changed, in ADS order (go-control-plane's: by response type).
// c.mu is held.
func (c *Cache) respondDelta(node string, st *nodeState) {
	if len(st.deltaWatches) == 0 || st.current == nil {
		return
	}
	watches := make([]*deltaWatch, 0, len(st.deltaWatches))
	for w := range st.deltaWatches {
		watches = append(watches, w)
	}
	slices.SortFunc(watches, func(a, b *deltaWatch) int {
		return int(cachev3.GetResponseType(a.req.GetTypeUrl())) - int(cachev3.GetResponseType(b.req.GetTypeUrl()))
	})
	for _, w := range watches {
		version := st.current.GetVersion(w.req.GetTypeUrl())
		if w.checked != "" && w.checked == version {
			continue // this type did not change
		}
		resp := deltaFor(w.req, w.sub, st.current)
		if resp == nil {
			w.checked = version
			continue
		}
		delete(st.deltaWatches, w)
		c.sendDelta(node, w, resp)
	}
}

// sendDelta hands a response to the stream. A stream has one watch per
// type and each watch is answered once, so its channel (go-control-plane
// gives it room for two responses per type) never blocks; should it be
// full, the response is dropped and logged rather than stall every node.
func (c *Cache) sendDelta(node string, w *deltaWatch, resp *deltaResponse) {
	resp.budget = c.budget
	select {
	case w.out <- resp:
	default:
		c.log.Error("delta response dropped: stream channel full", "node", node, "type", shortType(w.req.GetTypeUrl()))
	}
}
