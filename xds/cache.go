package xds

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// NACK is a configuration a node rejected.
type NACK struct {
	Node    string
	TypeURL string
	// Version is the rejected version; Detail is the node's error message.
	Version string
	Detail  string
	// Resources are the rejected resources (the whole rejected set of the
	// type), for tracing the rejection back to Istio resources.
	Resources []types.Resource
}

// Cache is go-control-plane's snapshot cache plus NACK safety and the
// bookkeeping behind metrics and the debug endpoint. It implements the ADS
// server's callbacks. State-of-the-world watches are the snapshot cache's;
// delta watches are answered from the same served snapshots by Cache itself
// (delta.go explains why).
//
// NACK safety: go-control-plane compares a request's version with the
// snapshot's and answers any difference at once, so a node that rejects a
// snapshot is sent it again immediately, forever (a NACK storm; see
// reference/xds-consumers.md). When a node rejects a type, Cache puts that
// type of the node's snapshot back to the version the node last accepted —
// the NACK then matches the snapshot and the watch waits — and remembers the
// rejected content: later generations that produce the same content for that
// node keep the accepted version instead of sending it again.
type Cache struct {
	// Node Envoys and gRPC clients are served from separate snapshot caches:
	// the Envoy one runs in ADS mode (responses ordered for make-before-break
	// and only to requests naming every resource of a type, as Envoy's do);
	// gRPC clients subscribe only to the targets they dial, which ADS mode
	// would never answer.
	envoy, grpc cachev3.SnapshotCache
	log         *slog.Logger
	metrics     *Metrics
	// Provider computes the configuration of a node that connects before any
	// snapshot was set for it; nil leaves such nodes waiting.
	Provider func(node *corev3.Node) *Config
	// OnNACK is called for every rejection (outside the cache's lock).
	OnNACK func(NACK)

	// setMu orders the computation of a node's served snapshot with setting
	// it, so that a push and a NACK restore cannot set them out of order.
	// It is taken before mu, and never inside a stream callback's use of mu.
	setMu   sync.Mutex
	mu      sync.Mutex
	nodes   map[string]*nodeState
	streams map[streamID]string // → node ID
	// overlays are the delta streams' subscription overlays (delta.go);
	// pending, those of requests go-control-plane is about to create a
	// watch for.
	overlays map[overlayKey]*subscriptionOverlay
	pending  map[*discoveryv3.DeltaDiscoveryRequest]*subscriptionOverlay
	// budget bounds the bytes of delta responses in flight (set by
	// NewServer; nil: unbounded).
	budget *sendBudget
}

type typeState struct {
	res      cachev3.Resources
	versions map[string]string
	// changed is when the change that produced this version happened.
	changed time.Time
}

type nodeState struct {
	kind    NodeKind
	current *cachev3.Snapshot
	config  *Config
	// history holds the versions a node may be put back on, by type.
	history  map[string]map[string]typeState
	acked    map[string]string
	rejected map[string]string
	sent     map[sentKey]string // response nonce → version
	streams  int
	lastSeen time.Time
	// deltaWatches are the node's open delta requests (delta.go).
	deltaWatches map[*deltaWatch]bool
}

// streamID identifies a stream: the state-of-the-world and delta servers
// number their streams independently.
type streamID struct {
	delta bool
	id    int64
}

type sentKey struct {
	stream  streamID
	typeURL string
	nonce   string
}

// NewCache returns an empty cache; nodes are keyed by their node ID.
func NewCache(logger *slog.Logger, m *Metrics) *Cache {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Cache{
		envoy:    cachev3.NewSnapshotCache(true, cachev3.IDHash{}, slogAdapter{logger.With("component", "xds-cache", "kind", "envoy")}),
		grpc:     cachev3.NewSnapshotCache(false, cachev3.IDHash{}, slogAdapter{logger.With("component", "xds-cache", "kind", "grpc")}),
		log:      logger,
		metrics:  m,
		nodes:    map[string]*nodeState{},
		streams:  map[streamID]string{},
		overlays: map[overlayKey]*subscriptionOverlay{},
		pending:  map[*discoveryv3.DeltaDiscoveryRequest]*subscriptionOverlay{},
	}
}

func (c *Cache) state(node string) *nodeState {
	st := c.nodes[node]
	if st == nil {
		st = &nodeState{
			history: map[string]map[string]typeState{}, acked: map[string]string{},
			rejected: map[string]string{}, sent: map[sentKey]string{},
		}
		c.nodes[node] = st
	}
	return st
}

// typeURLs lists the types a snapshot can hold, with their index.
var typeURLs = func() map[types.ResponseType]string {
	out := map[types.ResponseType]string{}
	for i := types.ResponseType(0); i < types.UnknownType; i++ {
		if u, err := cachev3.GetResponseTypeURL(i); err == nil {
			out[i] = u
		}
	}
	return out
}()

// Push sets a node's configuration, except for any type whose content the
// node has already rejected: that type stays on what the node accepted.
// changed is when the change behind cfg happened.
func (c *Cache) Push(cfg *Config, changed time.Time) error {
	return c.push(cfg, changed, false)
}

// push is Push; initial only sets a node that has no configuration yet (a
// Provider's answer must not replace a newer push).
func (c *Cache) push(cfg *Config, changed time.Time, initial bool) error {
	c.setMu.Lock()
	defer c.setMu.Unlock()
	c.mu.Lock()
	st := c.state(cfg.Node)
	if initial && st.current != nil {
		c.mu.Unlock()
		return nil
	}
	if st.config != nil && st.kind == cfg.Kind && sameVersions(st.config.Snapshot, cfg.Snapshot) {
		// Nothing changed for this node: keep what it is served.
		st.config = cfg
		c.mu.Unlock()
		return nil
	}
	st.kind, st.config = cfg.Kind, cfg
	snap := &cachev3.Snapshot{Resources: cfg.Snapshot.Resources, VersionMap: maps.Clone(cfg.Snapshot.VersionMap)}
	for i, typeURL := range typeURLs {
		v := snap.Resources[i].Version
		h := st.history[typeURL]
		if h == nil {
			h = map[string]typeState{}
			st.history[typeURL] = h
		}
		if _, ok := h[v]; !ok {
			h[v] = typeState{res: snap.Resources[i], versions: snap.VersionMap[typeURL], changed: changed}
		}
		if v != "" && st.rejected[typeURL] == v {
			c.log.Info("not resending configuration the node rejected", "node", cfg.Node, "type", shortType(typeURL), "version", v)
			c.restore(snap, st, i, typeURL, st.acked[typeURL])
		} else if st.rejected[typeURL] != "" && v != st.rejected[typeURL] {
			delete(st.rejected, typeURL) // new content: worth trying
		}
		c.prune(st, typeURL, v)
	}
	st.current = snap
	// Subscriptions kept as differences from what the node was served move
	// to what it is served now when the names are the same.
	for k, ov := range c.overlays {
		if c.streams[k.stream] == cfg.Node {
			ov.names.repoint(served(st, k.typeURL))
		}
	}
	c.respondDelta(cfg.Node, st)
	c.mu.Unlock()
	// State-of-the-world watches are go-control-plane's.
	return c.snapshots(cfg.Kind).SetSnapshot(context.Background(), cfg.Node, snap)
}

func sameVersions(a, b *cachev3.Snapshot) bool {
	for i := range a.Resources {
		if a.Resources[i].Version != b.Resources[i].Version {
			return false
		}
	}
	return true
}

// restore puts type i of snap back on version (what the node accepted), or
// on an empty set when the node never accepted any.
func (c *Cache) restore(snap *cachev3.Snapshot, st *nodeState, i types.ResponseType, typeURL, version string) {
	if ts, ok := st.history[typeURL][version]; ok {
		snap.Resources[i] = ts.res
		snap.VersionMap[typeURL] = ts.versions
		return
	}
	snap.Resources[i] = cachev3.Resources{Version: version}
	snap.VersionMap[typeURL] = map[string]string{}
}

// prune keeps the versions a node may still need: the accepted one, the
// current one and the rejected one.
func (c *Cache) prune(st *nodeState, typeURL, current string) {
	for v := range st.history[typeURL] {
		if v != current && v != st.acked[typeURL] && v != st.rejected[typeURL] {
			delete(st.history[typeURL], v)
		}
	}
}

// Connected lists the nodes with an open stream and their kinds.
func (c *Cache) Connected() map[string]NodeKind {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]NodeKind{}
	for id, st := range c.nodes {
		if st.streams > 0 {
			out[id] = st.kind
		}
	}
	return out
}

// Forget drops a node that has no open stream (a Node deleted from the
// cluster, a gRPC client gone): its snapshot and bookkeeping.
func (c *Cache) Forget(node string) {
	c.setMu.Lock()
	defer c.setMu.Unlock()
	c.mu.Lock()
	st := c.nodes[node]
	if st == nil || st.streams > 0 {
		c.mu.Unlock()
		return
	}
	delete(c.nodes, node)
	c.mu.Unlock()
	c.envoy.ClearSnapshot(node)
	c.grpc.ClearSnapshot(node)
}

// Known lists every node the cache holds state for.
func (c *Cache) Known() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.nodes))
	for id := range c.nodes {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Nodes lists the IDs of nodes with an open stream.
func (c *Cache) Nodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id, st := range c.nodes {
		if st.streams > 0 {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// NodeStatus is a node's xDS state, for the debug endpoint and tests.
type NodeStatus struct {
	Node      string            `json:"node"`
	Kind      string            `json:"kind"`
	Connected bool              `json:"connected"`
	Sent      map[string]string `json:"sent"`     // type → version set for the node
	Acked     map[string]string `json:"acked"`    // type → version the node accepted
	Rejected  map[string]string `json:"rejected"` // type → version the node rejected
	LastSeen  time.Time         `json:"lastSeen"`
}

// Status reports every known node.
func (c *Cache) Status() []NodeStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []NodeStatus
	for id, st := range c.nodes {
		s := NodeStatus{Node: id, Kind: st.kind.String(), Connected: st.streams > 0, Sent: map[string]string{},
			Acked: maps.Clone(st.acked), Rejected: maps.Clone(st.rejected), LastSeen: st.lastSeen}
		if st.current != nil {
			for i, typeURL := range typeURLs {
				if v := st.current.Resources[i].Version; v != "" {
					s.Sent[typeURL] = v
				}
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int {
		switch {
		case a.Node < b.Node:
			return -1
		case a.Node > b.Node:
			return 1
		}
		return 0
	})
	return out
}

// Config returns the configuration last pushed to a node (nil if none).
func (c *Cache) Config(node string) *Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.nodes[node]; st != nil {
		return st.config
	}
	return nil
}

// Served returns the snapshot a node is actually being served (after NACK
// restores).
func (c *Cache) Served(node string) *cachev3.Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.nodes[node]; st != nil {
		return st.current
	}
	return nil
}

// KindOf says whether a node is a proxyless gRPC client: Istio's convention,
// node metadata GENERATOR=grpc.
func KindOf(node *corev3.Node) NodeKind {
	if node.GetMetadata().GetFields()["GENERATOR"].GetStringValue() == "grpc" {
		return GRPCNode
	}
	return EnvoyNode
}

var (
	_ serverv3.Callbacks = (*Cache)(nil)
	_ cachev3.Cache      = (*Cache)(nil)
)

func (c *Cache) snapshots(k NodeKind) cachev3.SnapshotCache {
	if k == GRPCNode {
		return c.grpc
	}
	return c.envoy
}

// CreateWatch serves a state-of-the-world request from the cache of the
// node's kind.
func (c *Cache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	return c.snapshots(KindOf(req.GetNode())).CreateWatch(req, sub, out)
}

// Fetch serves REST xDS (unused by nodes, but part of the cache interface).
func (c *Cache) Fetch(ctx context.Context, req *cachev3.Request) (cachev3.Response, error) {
	return c.snapshots(KindOf(req.GetNode())).Fetch(ctx, req)
}

// OnStreamOpen counts streams.
func (c *Cache) OnStreamOpen(context.Context, int64, string) error {
	c.metrics.ConnectedNodes.Inc()
	return nil
}

// OnStreamClosed forgets a stream.
func (c *Cache) OnStreamClosed(id int64, _ *corev3.Node) {
	c.metrics.ConnectedNodes.Dec()
	c.closeStream(streamID{false, id})
}

// OnDeltaStreamOpen counts streams.
func (c *Cache) OnDeltaStreamOpen(context.Context, int64, string) error {
	c.metrics.ConnectedNodes.Inc()
	return nil
}

// OnDeltaStreamClosed forgets a stream.
func (c *Cache) OnDeltaStreamClosed(id int64, _ *corev3.Node) {
	c.metrics.ConnectedNodes.Dec()
	c.closeStream(streamID{true, id})
}

func (c *Cache) closeStream(id streamID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, ov := range c.overlays {
		if k.stream == id {
			delete(c.overlays, k)
			for req, p := range c.pending {
				if p == ov {
					delete(c.pending, req)
				}
			}
		}
	}
	node, ok := c.streams[id]
	if !ok {
		return
	}
	delete(c.streams, id)
	if st := c.nodes[node]; st != nil {
		st.streams--
		for k := range st.sent {
			if k.stream == id {
				delete(st.sent, k)
			}
		}
	}
}

// OnStreamRequest tracks ACKs and NACKs of state-of-the-world streams.
func (c *Cache) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	c.onRequest(streamID{false, id}, req.GetNode(), req.GetTypeUrl(), req.GetVersionInfo(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	return nil
}

// OnStreamResponse records what was sent.
func (c *Cache) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	c.onResponse(streamID{false, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

// OnStreamDeltaRequest tracks ACKs and NACKs of delta streams.
func (c *Cache) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	// Delta requests carry no version: the response nonce says what is
	// acknowledged or rejected.
	c.onRequest(streamID{true, id}, req.GetNode(), req.GetTypeUrl(), "", req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	c.takeSubscriptions(streamID{true, id}, req)
	return nil
}

type overlayKey struct {
	stream  streamID
	typeURL string
}

// takeSubscriptions moves a request's subscriptions and unsubscriptions
// (but "*") into the stream's overlay for the type (subscriptionOverlay says
// why), and notes which stream the request is on for CreateDeltaWatch, which
// go-control-plane calls next with the same request.
func (c *Cache) takeSubscriptions(stream streamID, req *discoveryv3.DeltaDiscoveryRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := overlayKey{stream, req.GetTypeUrl()}
	ov := c.overlays[key]
	if ov == nil {
		ov = newOverlay()
		c.overlays[key] = ov
	}
	current, keys := served(c.nodes[c.streams[stream]], req.GetTypeUrl())
	ov.apply(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe(), current, keys)
	req.ResourceNamesSubscribe = onlyWildcard(req.GetResourceNamesSubscribe())
	req.ResourceNamesUnsubscribe = onlyWildcard(req.GetResourceNamesUnsubscribe())
	c.pending[req] = ov
}

// served is the version map of a type in a node's served snapshot, and the
// identity of its names when known (nameSet).
func served(st *nodeState, typeURL string) (map[string]string, *keySet) {
	if st == nil || st.current == nil {
		return nil, nil
	}
	m := st.current.VersionMap[typeURL]
	if st.config != nil {
		if set := st.config.sets[typeURL]; set != nil && set.version == st.current.GetVersion(typeURL) {
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

// overlayFor returns the overlay noted for a request (c.mu held).
func (c *Cache) overlayFor(req *discoveryv3.DeltaDiscoveryRequest) *subscriptionOverlay {
	ov := c.pending[req]
	delete(c.pending, req)
	return ov
}

// OnStreamDeltaResponse records what was sent.
func (c *Cache) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	c.onResponse(streamID{true, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

// OnFetchRequest is unused (REST xDS).
func (c *Cache) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error { return nil }

// OnFetchResponse is unused (REST xDS).
func (c *Cache) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

func (c *Cache) onResponse(stream streamID, typeURL, nonce, version string) {
	c.metrics.Pushes.WithLabelValues(shortType(typeURL)).Inc()
	c.mu.Lock()
	defer c.mu.Unlock()
	if node, ok := c.streams[stream]; ok {
		c.state(node).sent[sentKey{stream, typeURL, nonce}] = version
	}
}

func (c *Cache) onRequest(stream streamID, node *corev3.Node, typeURL, version, nonce, detail string, nack bool) {
	c.mu.Lock()
	id, known := c.streams[stream]
	if !known {
		if node == nil {
			c.mu.Unlock()
			return
		}
		id = node.GetId()
		c.streams[stream] = id
		c.state(id).streams++
	}
	st := c.state(id)
	st.lastSeen = time.Now()
	needsConfig := st.current == nil && node != nil && c.Provider != nil
	c.mu.Unlock()
	if needsConfig {
		if cfg := c.Provider(node); cfg != nil {
			if err := c.push(cfg, time.Now(), true); err != nil {
				c.log.Error("set snapshot", "node", node.GetId(), "error", err)
			}
		}
	}
	if nonce == "" {
		return // a first request (or a new subscription): nothing to acknowledge
	}
	if !nack {
		c.mu.Lock()
		defer c.mu.Unlock()
		sentVersion, ok := st.sent[sentKey{stream, typeURL, nonce}]
		delete(st.sent, sentKey{stream, typeURL, nonce})
		if !ok || (version != "" && version != sentVersion) {
			return // stale nonce: the server ignores the request too
		}
		if st.acked[typeURL] != sentVersion {
			if ts, ok := st.history[typeURL][sentVersion]; ok && !ts.changed.IsZero() {
				c.metrics.Convergence.Observe(time.Since(ts.changed).Seconds())
			}
		}
		st.acked[typeURL] = sentVersion
		if st.current != nil {
			// The version the node ran before is no longer needed: a
			// generation's resources are not kept past the node's ACK of
			// the next.
			c.prune(st, typeURL, st.current.GetVersion(typeURL))
		}
		return
	}
	if n := c.rejected(stream, id, st, typeURL, version, nonce, detail); n != nil && c.OnNACK != nil {
		c.OnNACK(*n)
	}
}

// rejected handles a NACK: the node's served snapshot goes back to what the
// node accepted for that type, and the rejected version is remembered.
func (c *Cache) rejected(stream streamID, id string, st *nodeState, typeURL, version, nonce, detail string) *NACK {
	c.setMu.Lock()
	defer c.setMu.Unlock()
	c.mu.Lock()
	sentVersion, ok := st.sent[sentKey{stream, typeURL, nonce}]
	delete(st.sent, sentKey{stream, typeURL, nonce})
	if !ok {
		c.mu.Unlock()
		return nil // stale nonce: the server ignores the request too
	}
	c.metrics.NACKs.WithLabelValues(shortType(typeURL)).Inc()
	st.rejected[typeURL] = sentVersion
	var rejectedItems map[string]types.ResourceWithTTL
	if ts, ok := st.history[typeURL][sentVersion]; ok {
		rejectedItems = ts.res.Items
	}
	accepted, known := st.acked[typeURL], true
	if _, ok := st.acked[typeURL]; !ok {
		// Not seen accepting anything since this controller started. State
		// of the world: the NACK carries the version the node runs. Delta:
		// the node keeps what it has and the server, which tracks what it
		// sent, does not resend; leave the snapshot alone.
		accepted, known = version, !stream.delta
	}
	var restored *cachev3.Snapshot
	kind := st.kind
	if st.current != nil && known {
		restored = &cachev3.Snapshot{Resources: st.current.Resources, VersionMap: maps.Clone(st.current.VersionMap)}
		for i, u := range typeURLs {
			if u == typeURL {
				c.restore(restored, st, i, typeURL, accepted)
			}
		}
		st.current = restored
		c.respondDelta(id, st)
	}
	c.mu.Unlock()
	c.log.Warn("node rejected configuration; it stays on the last version it accepted",
		"node", id, "type", shortType(typeURL), "rejected", sentVersion, "accepted", accepted, "error", detail)
	if restored != nil {
		// Set before the server creates the next watch: the NACK's version
		// then matches and nothing is resent.
		if err := c.snapshots(kind).SetSnapshot(context.Background(), id, restored); err != nil {
			c.log.Error("restore snapshot", "node", id, "error", err)
		}
	}
	rejected, err := decodeItems(rejectedItems)
	if err != nil {
		c.log.Error("decoding rejected configuration", "node", id, "error", err)
	}
	return &NACK{Node: id, TypeURL: typeURL, Version: sentVersion, Detail: detail, Resources: rejected}
}

// slogAdapter gives go-control-plane's logger interface to slog.
type slogAdapter struct{ l *slog.Logger }

var _ log.Logger = slogAdapter{}

func (a slogAdapter) Debugf(format string, args ...any) { a.l.Debug(sprintf(format, args...)) }
func (a slogAdapter) Infof(format string, args ...any)  { a.l.Debug(sprintf(format, args...)) }
func (a slogAdapter) Warnf(format string, args ...any)  { a.l.Warn(sprintf(format, args...)) }
func (a slogAdapter) Errorf(format string, args ...any) { a.l.Error(sprintf(format, args...)) }
