package xds

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NACK is a configuration a node rejected.
type NACK struct {
	Node    string
	TypeURL string
	// Version is the rejected version; Detail is the node's error message,
	// bounded and with control characters escaped (it is the client's
	// text: it goes to logs and Events).
	Version string
	Detail  string
	// Resources are the rejected resources (the whole rejected set of the
	// type), for tracing the rejection back to Istio resources.
	Resources []types.Resource
	// Suppressed counts the rejections of the same stream and type not
	// reported since the previous report (reports are rate-limited).
	Suppressed int
}

// Cache is go-control-plane's snapshot cache plus NACK safety and the
// bookkeeping behind metrics and the debug endpoint. It implements the ADS
// server's callbacks. State-of-the-world watches are the snapshot cache's;
// delta watches are answered from the same served snapshots by Cache itself
// (delta.go explains why).
//
// What a node is pushed (its configuration) and what each of its streams is
// served are kept apart. NACK safety belongs to a stream (stream.go): when
// a stream rejects a type, that stream — and no other, whatever node ID it
// shares — is served the version it last accepted instead (or, when it has
// accepted nothing from this controller, is sent nothing more of the type),
// and it remembers every content it rejected: later pushes of any of those
// contents keep it where it is. go-control-plane compares a request's
// version with the snapshot's and answers any difference at once, so
// without this a stream that rejects a snapshot is sent it again
// immediately, forever (a NACK storm; see reference/xds-consumers.md).
type Cache struct {
	// Node Envoys and gRPC clients are served from separate snapshot caches:
	// the Envoy one runs in ADS mode (responses ordered for make-before-break
	// and only to requests naming every resource of a type, as Envoy's do);
	// gRPC clients subscribe only to the targets they dial, which ADS mode
	// would never answer. Both are keyed by stream (streamState.key), not
	// by node: every stream has a snapshot of its own.
	envoy, grpc cachev3.SnapshotCache
	log         *slog.Logger
	metrics     *Metrics
	// Provider computes the configuration of a node that connects before any
	// snapshot was set for it; nil leaves such nodes waiting.
	Provider func(node *corev3.Node) *Config
	// OnNACK is called for rejections (outside the cache's lock), at most
	// once per NACKReportInterval per stream and type; NACK.Suppressed
	// counts the ones in between.
	OnNACK func(NACK)

	// setMu orders the computation of a stream's served snapshot with
	// setting it, so that a push and a NACK restore cannot set them out of
	// order. It is taken before mu, and never inside a stream callback's use
	// of mu.
	setMu   sync.Mutex
	mu      sync.Mutex
	nodes   map[string]*nodeState
	streams map[streamID]*streamState
	// pending are the delta requests go-control-plane is about to create
	// a watch for, with their stream's overlay (delta.go).
	pending map[*discoveryv3.DeltaDiscoveryRequest]pendingDelta
	// sotwRequests are the state-of-the-world requests go-control-plane is
	// about to create a watch for, with their stream (one per stream).
	sotwRequests map[*discoveryv3.DiscoveryRequest]*streamState
	// seq numbers streams in the order they were registered.
	seq uint64
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

// nodeState is a node's configuration and the streams open for it. When its
// last stream closes, all it keeps is the configuration of a node Envoy the
// controller pushed (a node of the cluster, until the controller forgets
// it); anything else — a node only a connection brought (its configuration
// came from the Provider), a gRPC client — is forgotten, so that clients
// that come and go leave nothing behind.
type nodeState struct {
	kind    NodeKind
	config  *Config
	current *cachev3.Snapshot
	// pushed is set by Push (not by a Provider's answer).
	pushed bool
	// history holds the versions of each type a stream of the node holds or
	// may be served or asked about: the current one, the ones streams
	// accepted, the ones sent and not answered yet.
	history  map[string]map[string]typeState
	streams  map[streamID]*streamState
	lastSeen time.Time
}

// streamID identifies a stream: the state-of-the-world and delta servers
// number their streams independently.
type streamID struct {
	delta bool
	id    int64
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
		envoy:   cachev3.NewSnapshotCache(true, cachev3.IDHash{}, slogAdapter{logger.With("component", "xds-cache", "kind", "envoy")}),
		grpc:    cachev3.NewSnapshotCache(false, cachev3.IDHash{}, slogAdapter{logger.With("component", "xds-cache", "kind", "grpc")}),
		log:     logger,
		metrics: m,
		nodes:   map[string]*nodeState{},
		streams: map[streamID]*streamState{},
		pending: map[*discoveryv3.DeltaDiscoveryRequest]pendingDelta{},

		sotwRequests: map[*discoveryv3.DiscoveryRequest]*streamState{},
	}
}

func (c *Cache) state(node string) *nodeState {
	st := c.nodes[node]
	if st == nil {
		st = &nodeState{history: map[string]map[string]typeState{}, streams: map[streamID]*streamState{}}
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

// Push sets a node's configuration; each of its streams is served it,
// except for a type whose content that stream has rejected (it stays on
// what it accepted). changed is when the change behind cfg happened.
func (c *Cache) Push(cfg *Config, changed time.Time) error {
	return c.push(cfg, changed, false)
}

// push is Push; initial only sets a node that has no configuration yet (a
// Provider's answer must not replace a newer push).
func (c *Cache) push(cfg *Config, changed time.Time, initial bool) error {
	c.setMu.Lock()
	defer c.setMu.Unlock()
	c.mu.Lock()
	if st := c.nodes[cfg.Node]; initial && (st == nil || len(st.streams) == 0 || st.current != nil) {
		// A Provider's answer is for a stream that is still open, of a
		// node nothing was pushed to since.
		c.mu.Unlock()
		return nil
	}
	st := c.state(cfg.Node)
	if st.config != nil && st.kind == cfg.Kind && sameVersions(st.config.Snapshot, cfg.Snapshot) {
		// Nothing changed for this node: keep what it is served.
		st.config = cfg
		st.pushed = st.pushed || !initial
		c.mu.Unlock()
		return nil
	}
	st.kind, st.config = cfg.Kind, cfg
	st.pushed = st.pushed || !initial
	snap := &cachev3.Snapshot{Resources: cfg.Snapshot.Resources, VersionMap: cfg.Snapshot.VersionMap}
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
	}
	st.current = snap
	c.prune(st)
	sets := c.serveAll(st)
	c.mu.Unlock()
	return c.setSnapshots(sets)
}

func sameVersions(a, b *cachev3.Snapshot) bool {
	for i := range a.Resources {
		if a.Resources[i].Version != b.Resources[i].Version {
			return false
		}
	}
	return true
}

// prune keeps the versions of a node's history its streams may still need
// (nodeState.history). c.mu is held.
func (c *Cache) prune(st *nodeState) {
	for _, typeURL := range typeURLs {
		keep := map[string]bool{}
		if st.current != nil {
			keep[st.current.GetVersion(typeURL)] = true
		}
		for _, s := range st.streams {
			if t := s.types[typeURL]; t != nil {
				if t.ackedKnown {
					keep[t.acked] = true
				}
				for _, sent := range t.sent {
					keep[sent.version] = true
				}
			}
		}
		for v := range st.history[typeURL] {
			if !keep[v] {
				delete(st.history[typeURL], v)
			}
		}
	}
}

// Connected lists the nodes with an open stream and their kinds.
func (c *Cache) Connected() map[string]NodeKind {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]NodeKind{}
	for id, st := range c.nodes {
		if len(st.streams) > 0 {
			out[id] = st.kind
		}
	}
	return out
}

// Forget drops a node that has no open stream (a Node deleted from the
// cluster, a gRPC client gone): its configuration and bookkeeping.
func (c *Cache) Forget(node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.nodes[node]; st != nil && len(st.streams) == 0 {
		delete(c.nodes, node)
	}
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
		if len(st.streams) > 0 {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// NodeStatus is a node's xDS state, for the debug endpoint and tests. Sent,
// Acked and Rejected are those of the node's newest stream (a node has one
// but while a restarted Envoy's stream overlaps its predecessor's).
type NodeStatus struct {
	Node      string            `json:"node"`
	Kind      string            `json:"kind"`
	Connected bool              `json:"connected"`
	Streams   int               `json:"streams"`
	Sent      map[string]string `json:"sent"`     // type → version served
	Acked     map[string]string `json:"acked"`    // type → version the node accepted
	Rejected  map[string]string `json:"rejected"` // type → version the node rejected and is kept off
	LastSeen  time.Time         `json:"lastSeen"`
}

// Status reports every known node.
func (c *Cache) Status() []NodeStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []NodeStatus
	for id, st := range c.nodes {
		s := NodeStatus{Node: id, Kind: st.kind.String(), Connected: len(st.streams) > 0, Streams: len(st.streams),
			Sent: map[string]string{}, Acked: map[string]string{}, Rejected: map[string]string{}, LastSeen: st.lastSeen}
		served := st.current
		if ns := st.newest(); ns != nil {
			served = ns.served
			s.Acked, s.Rejected = st.outcome(ns)
		}
		if served != nil {
			for _, typeURL := range typeURLs {
				if v := served.GetVersion(typeURL); v != "" {
					s.Sent[typeURL] = v
				}
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return strings.Compare(a.Node, b.Node) })
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

// Served returns the snapshot a node is actually being served: its newest
// stream's (after any NACK restore), or its configuration when no stream is
// open.
func (c *Cache) Served(node string) *cachev3.Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.nodes[node]; st != nil {
		if s := st.newest(); s != nil && s.served != nil {
			return s.served
		}
		return st.current
	}
	return nil
}

// view is what a node is served (Served) with the acknowledged and
// rejected versions of Status, for the debug endpoint.
func (c *Cache) view(node string) (snap *cachev3.Snapshot, kind NodeKind, generation int64, acked, rejected map[string]string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.nodes[node]
	if st == nil || st.current == nil {
		return nil, 0, 0, nil, nil, false
	}
	snap, acked, rejected = st.current, map[string]string{}, map[string]string{}
	if s := st.newest(); s != nil && s.served != nil {
		snap = s.served
		acked, rejected = st.outcome(s)
	}
	if st.config != nil {
		generation = st.config.Generation
	}
	return snap, st.kind, generation, acked, rejected, true
}

// outcome is what a stream accepted, and which of the node's current
// versions it rejected (the types it is kept off the node's configuration
// for), by type.
func (st *nodeState) outcome(s *streamState) (acked, rejected map[string]string) {
	acked, rejected = map[string]string{}, map[string]string{}
	for typeURL, t := range s.types {
		if t.ackedKnown && t.acked != "" {
			acked[typeURL] = t.acked
		}
		if v := st.current.GetVersion(typeURL); t.rejects(v) {
			rejected[typeURL] = v
		}
	}
	return acked, rejected
}

// newest is the node's most recently opened stream (nil: none).
func (st *nodeState) newest() *streamState {
	var out *streamState
	for _, s := range st.streams {
		if out == nil || s.opened.After(out.opened) || (s.opened.Equal(out.opened) && s.seq > out.seq) {
			out = s
		}
	}
	return out
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

// CreateWatch serves a state-of-the-world request from the snapshot of the
// stream it came on (OnStreamRequest, called just before with the same
// request, noted which).
func (c *Cache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	c.mu.Lock()
	s := c.sotwRequests[req]
	delete(c.sotwRequests, req)
	c.mu.Unlock()
	if s == nil {
		// Not a request of a stream this cache registered (it closed).
		return nil, status.Error(codes.Unavailable, "stream not registered")
	}
	// go-control-plane keys its snapshots by the request's node: the
	// stream's own key stands in for it.
	keyed := &discoveryv3.DiscoveryRequest{
		VersionInfo: req.GetVersionInfo(), Node: s.keyNode, ResourceNames: req.GetResourceNames(),
		ResourceLocators: req.GetResourceLocators(), TypeUrl: req.GetTypeUrl(), ResponseNonce: req.GetResponseNonce(),
	}
	return c.snapshots(s.kind).CreateWatch(keyed, sub, out)
}

// Fetch serves REST xDS, which nodemesh does not offer.
func (c *Cache) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, errors.New("REST xDS is not served")
}

// slogAdapter gives go-control-plane's logger interface to slog.
type slogAdapter struct{ l *slog.Logger }

var _ log.Logger = slogAdapter{}

func (a slogAdapter) Debugf(format string, args ...any) { a.l.Debug(sprintf(format, args...)) }
func (a slogAdapter) Infof(format string, args ...any)  { a.l.Debug(sprintf(format, args...)) }
func (a slogAdapter) Warnf(format string, args ...any)  { a.l.Warn(sprintf(format, args...)) }
func (a slogAdapter) Errorf(format string, args ...any) { a.l.Error(sprintf(format, args...)) }
