package xds

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Limits on what a client can make the controller keep. A node ID is a
// Kubernetes node name (at most 253 bytes) or a proxyless client's
// Istio-style ID (sidecar~IP~pod.namespace~namespace.svc.domain); the node
// message is kept as long as the stream is open.
const (
	// MaxNodeIDBytes bounds a node ID.
	MaxNodeIDBytes = 1024
	// MaxNodeBytes bounds the encoded node message (ID, metadata, locality…).
	MaxNodeBytes = 64 << 10
	// maxRejected is how many rejected contents a stream remembers per
	// type; past it the oldest is forgotten (and would be tried again).
	maxRejected = 32
	// maxSent is how many unanswered responses a stream remembers per type
	// (a node answers the latest; older ones are only ever stale).
	maxSent = 8
	// maxNACKDetail bounds the bytes of a rejection's message kept for logs
	// and Events.
	maxNACKDetail = 512
)

// NACKReportInterval is how often a stream's rejections of one type are
// logged and reported (OnNACK); those in between are counted and reported
// with the next. A client decides what it rejects and what it says: its
// NACKs must not flood logs or Events.
var NACKReportInterval = 10 * time.Second

// streamState is one stream's view: the node it serves, the snapshot it is
// served, and per type what it accepted and rejected. NACK safety is kept
// here and nowhere else: what one stream rejects is withheld from that
// stream only, whatever node ID it shares with others (an Envoy restarted
// while its predecessor's stream is still open, or one that rejects what
// its predecessor accepted).
type streamState struct {
	id   streamID
	node string
	kind NodeKind
	// opened and seq order a node's streams (Status reports the newest).
	opened time.Time
	seq    uint64
	// key identifies the stream's snapshot in go-control-plane's cache;
	// keyNode is the node every state-of-the-world request of the stream is
	// given under that key.
	key     string
	keyNode *corev3.Node
	// served is what the stream is served: the node's configuration with
	// this stream's restores.
	served *cachev3.Snapshot
	types  map[string]*streamType
	// pendingSotw is the stream's latest state-of-the-world request, until
	// go-control-plane creates its watch (CreateWatch).
	pendingSotw *discoveryv3.DiscoveryRequest
	// overlays are the delta subscriptions' overlays, by type (delta.go);
	// deltaWatches the open delta requests.
	overlays     map[string]*subscriptionOverlay
	deltaWatches map[*deltaWatch]bool
}

// streamType is a stream's state for one type.
type streamType struct {
	// acked is the version the stream accepted last (ackedKnown: it
	// accepted one since this controller started).
	acked      string
	ackedKnown bool
	// holds is what a state-of-the-world stream said it runs when it
	// rejected a version before accepting any: the version it is kept on.
	holds string
	// rejected are the versions (content digests) the stream rejected,
	// oldest first.
	rejected []string
	// held is set while the stream is kept where it is for this type
	// because the node's configuration is content it rejected and it has
	// accepted nothing this controller can serve again: nothing of the type
	// is sent (delta), or the stream's own version is served without
	// resources (state of the world; it is never sent: the stream's
	// requests carry that version).
	held bool
	// sent are the responses not answered yet, oldest first.
	sent []sentResponse
	// lastReport is when a rejection was last reported; suppressed counts
	// the ones since.
	lastReport time.Time
	suppressed int
}

type sentResponse struct{ nonce, version string }

func (t *streamType) rejects(v string) bool { return v != "" && slices.Contains(t.rejected, v) }

// takeSent removes an answered response and returns its version.
func (t *streamType) takeSent(nonce string) (string, bool) {
	for i, s := range t.sent {
		if s.nonce == nonce {
			t.sent = slices.Delete(t.sent, i, i+1)
			return s.version, true
		}
	}
	return "", false
}

func (s *streamState) typ(typeURL string) *streamType {
	t := s.types[typeURL]
	if t == nil {
		t = &streamType{}
		s.types[typeURL] = t
	}
	return t
}

// sotwKey is the go-control-plane snapshot key of a state-of-the-world
// stream: the node ID with the stream's number (no node ID holds NUL).
func sotwKey(node string, id streamID) string {
	return node + "\x00" + strconv.FormatInt(id.id, 10)
}

// serve computes what a stream is served from its node's configuration: the
// configuration itself, except for types whose content the stream
// rejected, which stay on the version it accepted — or, when it accepted
// none this controller knows, where the stream is (held). c.mu is held.
func (c *Cache) serve(st *nodeState, s *streamState) *cachev3.Snapshot {
	cur := st.current
	if cur == nil {
		return nil
	}
	var out *cachev3.Snapshot
	for i, typeURL := range typeURLs {
		t := s.types[typeURL]
		if t == nil {
			continue
		}
		t.held = false
		if !t.rejects(cur.Resources[i].Version) {
			continue
		}
		if out == nil {
			out = &cachev3.Snapshot{Resources: cur.Resources, VersionMap: maps.Clone(cur.VersionMap)}
		}
		if ts, ok := st.history[typeURL][t.acked]; ok && t.ackedKnown && !t.rejects(t.acked) {
			out.Resources[i] = ts.res
			out.VersionMap[typeURL] = ts.versions
			continue
		}
		// Nothing accepted that can be served again. Never the rejected
		// content, and never less than the node holds: an empty set
		// under the version the stream runs is never sent to it (its
		// requests carry that version); delta streams send nothing of the
		// type while held (delta.go). After a controller restart this is
		// what the node said it has — its version, or its
		// initial_resource_versions — not an empty set.
		t.held = true
		out.Resources[i] = cachev3.Resources{Version: t.holds}
		out.VersionMap[typeURL] = map[string]string{}
	}
	if out == nil {
		return cur
	}
	return out
}

// snapshotSet is a state-of-the-world stream's snapshot to set.
type snapshotSet struct {
	kind NodeKind
	key  string
	snap *cachev3.Snapshot
}

// serveAll recomputes what every stream of a node is served: delta watches
// are answered at once, state-of-the-world snapshots are returned for
// setSnapshots (c.mu held; setMu too).
func (c *Cache) serveAll(st *nodeState) []snapshotSet {
	var sets []snapshotSet
	for _, s := range st.streams {
		if set, ok := c.reserve(st, s); ok {
			sets = append(sets, set)
		}
	}
	return sets
}

// reserve recomputes what one stream is served (c.mu held).
func (c *Cache) reserve(st *nodeState, s *streamState) (snapshotSet, bool) {
	s.served = c.serve(st, s)
	// Subscriptions kept as differences from what the stream was served
	// move to what it is served now when the names are the same.
	for typeURL, ov := range s.overlays {
		ov.names.repoint(served(st, s, typeURL))
	}
	if s.id.delta {
		c.respondDelta(s)
		return snapshotSet{}, false
	}
	if s.served == nil {
		return snapshotSet{}, false
	}
	return snapshotSet{kind: s.kind, key: s.key, snap: s.served}, true
}

// serveNew serves a stream that just opened the configuration its node
// has; false when the node has none yet.
func (c *Cache) serveNew(s *streamState) bool {
	c.setMu.Lock()
	defer c.setMu.Unlock()
	c.mu.Lock()
	st := c.nodes[s.node]
	if st == nil || st.current == nil || c.streams[s.id] != s {
		c.mu.Unlock()
		return false
	}
	set, ok := c.reserve(st, s)
	c.mu.Unlock()
	if ok {
		if err := c.setSnapshots([]snapshotSet{set}); err != nil {
			c.log.Error("set snapshot", "node", s.node, "error", err)
		}
	}
	return true
}

// setSnapshots sets state-of-the-world streams' snapshots in
// go-control-plane's cache (outside c.mu: it answers watches; setMu held).
func (c *Cache) setSnapshots(sets []snapshotSet) error {
	var errs []error
	for _, set := range sets {
		if err := c.snapshots(set.kind).SetSnapshot(context.Background(), set.key, set.snap); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("set snapshot: %v", errs)
	}
	return nil
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

// closeStream forgets a stream, and its node when it was the node's last
// and the node is not one the controller pushes (nodeState).
func (c *Cache) closeStream(id streamID) {
	c.mu.Lock()
	s := c.streams[id]
	if s == nil {
		c.mu.Unlock()
		return
	}
	delete(c.streams, id)
	if s.pendingSotw != nil {
		delete(c.sotwRequests, s.pendingSotw)
	}
	for req, p := range c.pending {
		if p.stream == s {
			delete(c.pending, req)
		}
	}
	if st := c.nodes[s.node]; st != nil {
		delete(st.streams, id)
		if len(st.streams) == 0 && !(st.pushed && st.kind == EnvoyNode) {
			delete(c.nodes, s.node)
		} else {
			c.prune(st)
		}
	}
	c.mu.Unlock()
	if !id.delta {
		c.snapshots(s.kind).ClearSnapshot(s.key)
	}
}

// OnStreamRequest registers a state-of-the-world stream and tracks its
// ACKs and NACKs.
func (c *Cache) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	s, err := c.onRequest(streamID{false, id}, req.GetNode(), req.GetTypeUrl(), req.GetVersionInfo(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if s.pendingSotw != nil {
		delete(c.sotwRequests, s.pendingSotw)
	}
	s.pendingSotw = req
	c.sotwRequests[req] = s
	c.mu.Unlock()
	return nil
}

// OnStreamResponse records what was sent.
func (c *Cache) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	c.onResponse(streamID{false, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

// OnStreamDeltaRequest registers a delta stream and tracks its ACKs and
// NACKs.
func (c *Cache) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	// Delta requests carry no version: the response nonce says what is
	// acknowledged or rejected.
	s, err := c.onRequest(streamID{true, id}, req.GetNode(), req.GetTypeUrl(), "", req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	if err != nil {
		return err
	}
	c.takeSubscriptions(s, req)
	return nil
}

// OnStreamDeltaResponse records what was sent.
func (c *Cache) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	c.onResponse(streamID{true, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

// OnFetchRequest refuses REST xDS.
func (c *Cache) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "REST xDS is not served")
}

// OnFetchResponse is unused (REST xDS).
func (c *Cache) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

func (c *Cache) onResponse(stream streamID, typeURL, nonce, version string) {
	c.metrics.Pushes.WithLabelValues(shortType(typeURL)).Inc()
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.streams[stream]; s != nil {
		t := s.typ(typeURL)
		if len(t.sent) == maxSent {
			t.sent = slices.Delete(t.sent, 0, 1)
		}
		t.sent = append(t.sent, sentResponse{nonce, version})
	}
}

// checkNode refuses a node a stream cannot be registered with.
func checkNode(node *corev3.Node) error {
	switch {
	case node.GetId() == "":
		return status.Error(codes.InvalidArgument, "the first request of a stream must carry a node with an ID")
	case len(node.GetId()) > MaxNodeIDBytes:
		return status.Errorf(codes.InvalidArgument, "node ID of %d bytes: at most %d", len(node.GetId()), MaxNodeIDBytes)
	case strings.ContainsRune(node.GetId(), 0):
		return status.Error(codes.InvalidArgument, "node ID holds a NUL byte")
	}
	if n := proto.Size(node); n > MaxNodeBytes {
		return status.Errorf(codes.InvalidArgument, "node message of %d bytes: at most %d", n, MaxNodeBytes)
	}
	return nil
}

// register finds the stream of a request, registering it on its first
// request (which must name a node). A later request that names another
// node is refused: a stream serves one node.
func (c *Cache) register(id streamID, node *corev3.Node) (*streamState, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.streams[id]; s != nil {
		if node != nil && node.GetId() != s.node {
			return nil, false, status.Errorf(codes.InvalidArgument, "stream opened for node %q cannot change its node ID", s.node)
		}
		c.nodes[s.node].lastSeen = time.Now()
		return s, false, nil
	}
	if err := checkNode(node); err != nil {
		c.metrics.Refused.WithLabelValues("invalid-node").Inc()
		return nil, false, err
	}
	c.seq++
	s := &streamState{
		id: id, node: node.GetId(), kind: KindOf(node), opened: time.Now(), seq: c.seq,
		key: sotwKey(node.GetId(), id), types: map[string]*streamType{}, overlays: map[string]*subscriptionOverlay{},
	}
	s.keyNode = &corev3.Node{Id: s.key}
	c.streams[id] = s
	st := c.state(s.node)
	st.streams[id] = s
	st.lastSeen = time.Now()
	if st.current == nil {
		st.kind = s.kind
	}
	return s, true, nil
}

func (c *Cache) onRequest(stream streamID, node *corev3.Node, typeURL, version, nonce, detail string, nack bool) (*streamState, error) {
	s, opened, err := c.register(stream, node)
	if err != nil {
		return nil, err
	}
	if opened && !c.serveNew(s) && c.Provider != nil {
		// The node has no configuration yet: compute it (push serves
		// every stream of the node, this one included).
		if cfg := c.Provider(node); cfg != nil {
			if err := c.push(cfg, time.Now(), true); err != nil {
				c.log.Error("set snapshot", "node", s.node, "error", err)
			}
		}
	}
	if nonce == "" {
		return s, nil // a first request (or a new subscription): nothing to acknowledge
	}
	if !nack {
		c.acked(s, typeURL, version, nonce)
		return s, nil
	}
	if n := c.rejected(s, typeURL, version, nonce, detail); n != nil && c.OnNACK != nil {
		c.OnNACK(*n)
	}
	return s, nil
}

// acked records an ACK.
func (c *Cache) acked(s *streamState, typeURL, version, nonce string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := s.typ(typeURL)
	sentVersion, ok := t.takeSent(nonce)
	if !ok || (version != "" && version != sentVersion) {
		return // stale nonce: the server ignores the request too
	}
	st := c.nodes[s.node]
	if st == nil {
		return
	}
	if !t.ackedKnown || t.acked != sentVersion {
		if ts, ok := st.history[typeURL][sentVersion]; ok && !ts.changed.IsZero() {
			c.metrics.Convergence.Observe(time.Since(ts.changed).Seconds())
		}
	}
	t.acked, t.ackedKnown = sentVersion, true
	// The version the stream ran before is no longer needed.
	c.prune(st)
}

// rejected handles a NACK: the stream's served snapshot goes back to what
// it accepted for that type (or holds where it is), and the rejected
// version is remembered for the stream.
func (c *Cache) rejected(s *streamState, typeURL, version, nonce, detail string) *NACK {
	c.setMu.Lock()
	defer c.setMu.Unlock()
	c.mu.Lock()
	t := s.typ(typeURL)
	sentVersion, ok := t.takeSent(nonce)
	st := c.nodes[s.node]
	if !ok || st == nil {
		c.mu.Unlock()
		return nil // stale nonce: the server ignores the request too
	}
	c.metrics.NACKs.WithLabelValues(shortType(typeURL)).Inc()
	if !t.rejects(sentVersion) {
		if len(t.rejected) == maxRejected {
			t.rejected = slices.Delete(t.rejected, 0, 1)
		}
		t.rejected = append(t.rejected, sentVersion)
	}
	if !t.ackedKnown && !s.id.delta {
		// State of the world: the NACK carries the version the node runs
		// (from a previous controller, or none).
		t.holds = version
	}
	var rejectedItems map[string]types.ResourceWithTTL
	if ts, ok := st.history[typeURL][sentVersion]; ok {
		rejectedItems = ts.res.Items
	}
	set, setOK := c.reserve(st, s)
	c.prune(st)
	accepted := "(none)"
	if t.ackedKnown {
		accepted = t.acked
	} else if !s.id.delta {
		accepted = strconv.Quote(version)
	}
	report := time.Since(t.lastReport) >= NACKReportInterval
	suppressed := t.suppressed
	if report {
		t.lastReport, t.suppressed = time.Now(), 0
	} else {
		t.suppressed++
	}
	c.mu.Unlock()
	if setOK {
		// Set before the server creates the next watch: the NACK's version
		// then matches and nothing is resent.
		if err := c.setSnapshots([]snapshotSet{set}); err != nil {
			c.log.Error("restore snapshot", "node", s.node, "error", err)
		}
	}
	if !report {
		return nil
	}
	detail = sanitizeDetail(detail)
	c.log.Warn("node rejected configuration; its stream stays on the last version it accepted",
		"node", s.node, "stream", s.id.id, "delta", s.id.delta, "type", shortType(typeURL),
		"rejected", sentVersion, "accepted", accepted, "suppressed", suppressed, "error", detail)
	rejected, err := decodeItems(rejectedItems)
	if err != nil {
		c.log.Error("decoding rejected configuration", "node", s.node, "error", err)
	}
	return &NACK{Node: s.node, TypeURL: typeURL, Version: sentVersion, Detail: detail, Resources: rejected, Suppressed: suppressed}
}

// sanitizeDetail bounds a client's rejection message and escapes what is
// not printable (control characters, invalid UTF-8), so that it can be
// put in a log line or an Event as it is.
func sanitizeDetail(s string) string {
	var b strings.Builder
	for i, r := range s {
		if b.Len() >= maxNACKDetail {
			b.WriteString("…")
			break
		}
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == ' ' || (unicode.IsPrint(r) && r != '\\'):
			b.WriteRune(r)
		default:
			b.WriteString(strings.Trim(strconv.QuoteRune(r), "'"))
		}
	}
	return b.String()
}
