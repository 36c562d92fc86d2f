package xdstest

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nodemesh/nodemesh/translate"
)

// ADSClient plays a node Envoy on an ADS stream: it subscribes to clusters
// and listeners (wildcard), then to the endpoints and route configurations
// they name, as Envoy does, and ACKs every response unless Reject says
// otherwise. When the stream breaks it reconnects and resumes with what it
// holds (state-of-the-world versions, or delta initial_resource_versions),
// as Envoy does, until its context ends.
type ADSClient struct {
	node  *corev3.Node
	delta bool
	conn  *grpc.ClientConn
	// reject decides whether to NACK a response: a non-empty message NACKs
	// it. It sees the whole state of the type the response would produce.
	reject func(typeURL string, resources map[string]*anypb.Any) string
	// light keeps names and versions only, not resource bodies.
	light bool

	mu         sync.Mutex
	changed    chan struct{}
	types      map[string]*TypeState
	err        error
	streamErr  error // why the last stream broke
	reconnects int
	// send sends a request on the current stream (mu held).
	send func(any) error
}

// TypeState is what the client holds for one type.
type TypeState struct {
	// Resources are the accepted resources by name, with their versions
	// (per resource in delta xDS; the type's version in state of the world).
	Resources map[string]*anypb.Any
	Versions  map[string]string
	// Version is the accepted version of the type.
	Version string
	// Responses, ACKs and NACKs count what went over the streams; Changes
	// counts accepted responses that changed a version (configuration churn
	// for Envoy; a resent unchanged version is not one).
	Responses, ACKs, NACKs, Changes int
	// Received counts resources received (added or updated, in delta).
	Received int
	// ChangedAt is when the last change was accepted (and ACKed).
	ChangedAt time.Time
	// LastResources names the resources of the last response (delta: the
	// added or updated ones) and LastRemoved the ones it removed.
	LastResources, LastRemoved []string

	nonce string
	names []string // subscribed names (endpoints, route configurations)
	// deps are what each accepted cluster or listener names (EDS service
	// names, route configurations).
	deps map[string][]string
}

// Envoy's subscription order; clusters and listeners are wildcard.
var envoyTypes = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

func wildcard(typeURL string) bool {
	return typeURL == resourcev3.ClusterType || typeURL == resourcev3.ListenerType
}

// NewADSClient connects to addr as node (node.Id names it) over state of
// the world (delta false) or delta xDS, with the test token of that node
// over TLS (a server of Serve). reject may be nil (ACK everything). It runs
// until ctx ends.
func NewADSClient(ctx context.Context, addr string, node *corev3.Node, delta bool, reject func(typeURL string, resources map[string]*anypb.Any) string) (*ADSClient, error) {
	conn, err := Dial(addr, DialOptions(Token(node.GetId()))...)
	if err != nil {
		return nil, err
	}
	return newADSClient(ctx, conn, node, delta, reject, false), nil
}

// NewADSClientConn is NewADSClient on a connection the caller dialled
// (other credentials); the client closes it.
func NewADSClientConn(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node, delta bool, reject func(typeURL string, resources map[string]*anypb.Any) string) *ADSClient {
	return newADSClient(ctx, conn, node, delta, reject, false)
}

// Dial connects to an xDS server with opts (DialOptions) and without a
// message size limit: Envoy's gRPC client (envoy_grpc) has none by
// default; grpc-go's is 4 MiB, which one response of a large mesh exceeds.
func Dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)))...)
}

// NewLightADSClientConn is NewLightADSClient on a connection of the
// caller's (credentials of its own: a real controller's CA and tokens).
func NewLightADSClientConn(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node, delta bool) *ADSClient {
	return newADSClient(ctx, conn, node, delta, nil, true)
}

// NewLightADSClient is a delta or state-of-the-world ADS client like
// NewADSClient that keeps only the names and versions of what it accepts
// (TypeState.Resources hold empty Anys): a hundred simulated nodes of a
// large mesh in one benchmark process.
func NewLightADSClient(ctx context.Context, addr string, node *corev3.Node, delta bool) (*ADSClient, error) {
	conn, err := Dial(addr, DialOptions(Token(node.GetId()))...)
	if err != nil {
		return nil, err
	}
	return newADSClient(ctx, conn, node, delta, nil, true), nil
}

func newADSClient(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node, delta bool, reject func(string, map[string]*anypb.Any) string, light bool) *ADSClient {
	c := &ADSClient{node: node, delta: delta, conn: conn, reject: reject, light: light, changed: make(chan struct{}), types: map[string]*TypeState{}}
	for _, t := range envoyTypes {
		c.types[t] = &TypeState{Resources: map[string]*anypb.Any{}, Versions: map[string]string{}}
	}
	go c.run(ctx)
	return c
}

// Close ends the client.
func (c *ADSClient) Close() error { return c.conn.Close() }

// Reconnects is how many times the stream was reopened.
func (c *ADSClient) Reconnects() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reconnects
}

// State returns a copy of a type's state.
func (c *ADSClient) State(typeURL string) TypeState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.types[typeURL].clone()
}

func (s *TypeState) clone() TypeState {
	cp := *s
	cp.Resources, cp.Versions = maps.Clone(s.Resources), maps.Clone(s.Versions)
	cp.LastResources, cp.LastRemoved = slices.Clone(s.LastResources), slices.Clone(s.LastRemoved)
	return cp
}

// States is every type's state, by type URL.
type States map[string]TypeState

// AllACKed says whether the client has accepted a response of each of the
// four types a node Envoy uses (a condition for Wait).
func AllACKed(s States) bool {
	for _, t := range envoyTypes {
		if s[t].ACKs == 0 {
			return false
		}
	}
	return true
}

// Wait waits until cond holds for the client's states or ctx ends.
func (c *ADSClient) Wait(ctx context.Context, cond func(States) bool) error {
	for {
		c.mu.Lock()
		states := States{}
		for t, s := range c.types {
			states[t] = s.clone()
		}
		ch, err := c.changed, c.err
		c.mu.Unlock()
		if cond(states) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			c.mu.Lock()
			serr := c.streamErr
			c.mu.Unlock()
			if serr != nil {
				return fmt.Errorf("%s: %w (last stream error: %v)", c.node.GetId(), ctx.Err(), serr)
			}
			return fmt.Errorf("%s: %w", c.node.GetId(), ctx.Err())
		}
	}
}

func (c *ADSClient) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *ADSClient) run(ctx context.Context) {
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn)
	for attempt := 0; ; attempt++ {
		err := c.stream(ctx, ads, attempt > 0)
		if ctx.Err() != nil {
			c.mu.Lock()
			c.err = fmt.Errorf("%s: stream ended: %w", c.node.GetId(), ctx.Err())
			c.notify()
			c.mu.Unlock()
			return
		}
		// The stream broke (controller restarted, say): reconnect.
		c.mu.Lock()
		c.streamErr = err
		c.mu.Unlock()
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// locked serialises a stream's Send (the receive loop and waiters both
// send) and takes the request type the stream expects.
func locked[T any](mu *sync.Mutex, send func(T) error) func(any) error {
	return func(m any) error {
		mu.Lock()
		defer mu.Unlock()
		return send(m.(T))
	}
}

// stream runs one ADS stream until it breaks.
func (c *ADSClient) stream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient, resumed bool) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var recv func() (any, error)
	var sendMu sync.Mutex
	if c.delta {
		s, err := ads.DeltaAggregatedResources(sctx, grpc.WaitForReady(true))
		if err != nil {
			return err
		}
		c.send = locked(&sendMu, s.Send)
		recv = func() (any, error) { return s.Recv() }
	} else {
		s, err := ads.StreamAggregatedResources(sctx, grpc.WaitForReady(true))
		if err != nil {
			return err
		}
		c.send = locked(&sendMu, s.Send)
		recv = func() (any, error) { return s.Recv() }
	}
	c.mu.Lock()
	if resumed {
		c.reconnects++
		c.notify()
	}
	var err error
	first := true
	for _, t := range envoyTypes {
		s := c.types[t]
		s.nonce = ""
		if !wildcard(t) && len(s.names) == 0 {
			continue
		}
		var req any
		if c.delta {
			names := s.names
			if wildcard(t) {
				names = []string{"*"}
			}
			req = &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: names, InitialResourceVersions: maps.Clone(s.Versions)}
		} else {
			req = &discoveryv3.DiscoveryRequest{TypeUrl: t, VersionInfo: s.Version, ResourceNames: s.names}
		}
		if first {
			setNode(req, c.node)
			first = false
		}
		if err = c.send(req); err != nil {
			break
		}
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	for {
		resp, err := recv()
		if err != nil {
			return err
		}
		switch r := resp.(type) {
		case *discoveryv3.DiscoveryResponse:
			c.onSotW(r)
		case *discoveryv3.DeltaDiscoveryResponse:
			c.onDelta(r)
		}
	}
}

func setNode(req any, n *corev3.Node) {
	switch r := req.(type) {
	case *discoveryv3.DiscoveryRequest:
		r.Node = n
	case *discoveryv3.DeltaDiscoveryRequest:
		r.Node = n
	}
}

// ackOrNack answers a response (mu held).
func (c *ADSClient) ackOrNack(t string, errMsg string) {
	s := c.types[t]
	var detail *status.Status
	if errMsg != "" {
		detail = &status.Status{Code: 3, Message: errMsg}
	}
	var req any
	if c.delta {
		req = &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: s.nonce, ErrorDetail: detail}
	} else {
		// A NACK carries the version still in use.
		req = &discoveryv3.DiscoveryRequest{TypeUrl: t, VersionInfo: s.Version, ResourceNames: s.names, ResponseNonce: s.nonce, ErrorDetail: detail}
	}
	_ = c.send(req) // a broken stream is noticed by the receive loop
}

func (c *ADSClient) onSotW(resp *discoveryv3.DiscoveryResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := resp.GetTypeUrl()
	s := c.types[t]
	if s == nil {
		return
	}
	s.Responses++
	s.nonce = resp.GetNonce()
	next := map[string]*anypb.Any{}
	s.LastResources, s.LastRemoved = nil, nil
	for _, r := range resp.GetResources() {
		n := nameOf(r)
		next[n] = r
		s.LastResources = append(s.LastResources, n)
	}
	s.Received += len(s.LastResources)
	slices.Sort(s.LastResources)
	c.apply(t, next, nil, resp.GetVersionInfo(), s.LastResources)
}

func (c *ADSClient) onDelta(resp *discoveryv3.DeltaDiscoveryResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := resp.GetTypeUrl()
	s := c.types[t]
	if s == nil {
		return
	}
	s.Responses++
	s.nonce = resp.GetNonce()
	next, versions := maps.Clone(s.Resources), maps.Clone(s.Versions)
	s.LastResources, s.LastRemoved = nil, slices.Sorted(slices.Values(resp.GetRemovedResources()))
	for _, r := range resp.GetResources() {
		next[r.GetName()] = r.GetResource()
		versions[r.GetName()] = r.GetVersion()
		s.LastResources = append(s.LastResources, r.GetName())
	}
	s.Received += len(s.LastResources)
	slices.Sort(s.LastResources)
	for _, n := range resp.GetRemovedResources() {
		delete(next, n)
		delete(versions, n)
	}
	c.apply(t, next, versions, resp.GetSystemVersionInfo(), s.LastResources)
}

// apply accepts or rejects the state a response produces; updated names the
// resources the response carried (mu held).
func (c *ADSClient) apply(t string, next map[string]*anypb.Any, versions map[string]string, version string, updated []string) {
	s := c.types[t]
	defer c.notify()
	if c.reject != nil {
		if msg := c.reject(t, next); msg != "" {
			s.NACKs++
			c.ackOrNack(t, msg)
			return
		}
	}
	if versions == nil { // state of the world: one version for all
		versions = map[string]string{}
		for n := range next {
			versions[n] = version
		}
	}
	if version != s.Version || !maps.Equal(versions, s.Versions) {
		s.Changes++
		s.ChangedAt = time.Now()
	}
	s.Resources, s.Versions, s.Version = next, versions, version
	s.ACKs++
	c.ackOrNack(t, "")
	c.noteDeps(t, updated)
	if c.light {
		for _, n := range updated {
			if a := s.Resources[n]; a != nil {
				s.Resources[n] = &anypb.Any{TypeUrl: a.GetTypeUrl()}
			}
		}
	}
	c.follow(t)
}

// noteDeps records what the updated clusters and listeners name (their
// EDS service names and route configurations), decoding only those, and
// forgets what removed ones named (mu held).
func (c *ADSClient) noteDeps(typeURL string, updated []string) {
	s := c.types[typeURL]
	if typeURL != resourcev3.ClusterType && typeURL != resourcev3.ListenerType {
		return
	}
	if s.deps == nil {
		s.deps = map[string][]string{}
	}
	for n := range s.deps {
		if _, ok := s.Resources[n]; !ok {
			delete(s.deps, n)
		}
	}
	for _, n := range updated {
		a := s.Resources[n]
		if a == nil {
			continue
		}
		switch typeURL {
		case resourcev3.ClusterType:
			cl := &clusterv3.Cluster{}
			if a.UnmarshalTo(cl) == nil && cl.GetType() == clusterv3.Cluster_EDS {
				name := cl.GetEdsClusterConfig().GetServiceName()
				if name == "" {
					name = cl.GetName()
				}
				s.deps[n] = []string{name}
			} else {
				delete(s.deps, n)
			}
		case resourcev3.ListenerType:
			l := &listenerv3.Listener{}
			if a.UnmarshalTo(l) == nil {
				s.deps[n] = translate.RouteConfigNames(l)
			} else {
				delete(s.deps, n)
			}
		}
	}
}

// follow subscribes to the endpoints and route configurations named by the
// accepted clusters and listeners (mu held).
func (c *ADSClient) follow(typeURL string) {
	var dep string
	switch typeURL {
	case resourcev3.ClusterType:
		dep = resourcev3.EndpointType
	case resourcev3.ListenerType:
		dep = resourcev3.RouteType
	default:
		return
	}
	seen := map[string]bool{}
	var names []string
	for _, ds := range c.types[typeURL].deps {
		for _, n := range ds {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	s := c.types[dep]
	if slices.Equal(names, s.names) {
		return
	}
	if c.delta {
		old := map[string]bool{}
		for _, n := range s.names {
			old[n] = true
		}
		var sub, unsub []string
		for _, n := range names {
			if !old[n] {
				sub = append(sub, n)
			}
			delete(old, n)
		}
		for n := range old {
			unsub = append(unsub, n)
			delete(s.Resources, n)
			delete(s.Versions, n)
		}
		s.names = names
		_ = c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: dep, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub})
		return
	}
	s.names = names
	if len(names) == 0 {
		// In state of the world an empty list means wildcard: keep the old
		// subscription rather than ask for everything.
		return
	}
	_ = c.send(&discoveryv3.DiscoveryRequest{TypeUrl: dep, VersionInfo: s.Version, ResourceNames: names, ResponseNonce: s.nonce})
}

func nameOf(a *anypb.Any) string {
	m, err := a.UnmarshalNew()
	if err != nil {
		return ""
	}
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	if n, ok := m.(interface{ GetClusterName() string }); ok {
		return n.GetClusterName()
	}
	return ""
}
