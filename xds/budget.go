package xds

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// sendBudget bounds the bytes of responses being built, encoded and written
// at once. A node's first response of a type holds everything of that type
// (40,000 clusters at 10,000 Services, tens of megabytes encoded); when a
// hundred nodes connect together — a controller restart — every stream
// would otherwise hold its own encoded copy at the same time. Responses wait
// for budget instead, largest first to none: a response bigger than the
// whole budget takes all of it. A slow node cannot stall the others for
// long: a response that waited sendBudgetWait goes out regardless.
type sendBudget struct {
	sem   *semaphore.Weighted
	limit int64
	wait  time.Duration

	mu   sync.Mutex
	held map[any]int64 // message → budget taken while it was built
}

const (
	// DefaultSendBudget is how many bytes of responses may be in flight.
	DefaultSendBudget = 64 << 20
	sendBudgetWait    = 5 * time.Second
)

func newSendBudget(limit int64) *sendBudget {
	return &sendBudget{sem: semaphore.NewWeighted(limit), limit: limit, wait: sendBudgetWait, held: map[any]int64{}}
}

// acquire takes up to n bytes of budget and returns what it took (0 when it
// gave up waiting).
func (b *sendBudget) acquire(n int64) int64 {
	if b == nil {
		return 0
	}
	n = min(max(n, 1), b.limit)
	ctx, cancel := context.WithTimeout(context.Background(), b.wait)
	defer cancel()
	if b.sem.Acquire(ctx, n) != nil {
		return 0
	}
	return n
}

func (b *sendBudget) release(n int64) {
	if b != nil && n > 0 {
		b.sem.Release(n)
	}
}

// hold remembers the budget taken for a message until it is sent.
func (b *sendBudget) hold(msg any, n int64) {
	if b == nil || n == 0 {
		return
	}
	b.mu.Lock()
	b.held[msg] = n
	b.mu.Unlock()
}

func (b *sendBudget) take(msg any) (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.held[msg]
	delete(b.held, msg)
	return n, ok
}

// interceptor makes every message sent on a stream wait for budget (or use
// what was taken while building it). gRPC's SendMsg returns once a message
// is queued for the connection, not when the node has it, so the budget is
// given back when the node answers the response — its ACK or NACK, the next
// request of that type — or when the stream ends.
func (b *sendBudget) interceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	s := &budgetStream{ServerStream: ss, b: b, pending: map[string]int64{}}
	defer s.releaseAll()
	return handler(srv, s)
}

type budgetStream struct {
	grpc.ServerStream
	b *sendBudget

	mu      sync.Mutex
	pending map[string]int64 // type URL → budget of responses not answered yet
}

type typed interface{ GetTypeUrl() string }

func (s *budgetStream) SendMsg(m any) error {
	n, ok := s.b.take(m)
	if !ok {
		if pm, isProto := m.(proto.Message); isProto {
			n = s.b.acquire(int64(proto.Size(pm)))
		}
	}
	err := s.ServerStream.SendMsg(m)
	t, isTyped := m.(typed)
	if err != nil || !isTyped {
		s.b.release(n)
		return err
	}
	s.mu.Lock()
	s.pending[t.GetTypeUrl()] += n
	s.mu.Unlock()
	return nil
}

func (s *budgetStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if t, ok := m.(typed); ok && err == nil {
		s.mu.Lock()
		n := s.pending[t.GetTypeUrl()]
		delete(s.pending, t.GetTypeUrl())
		s.mu.Unlock()
		s.b.release(n)
	}
	return err
}

func (s *budgetStream) releaseAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, n := range s.pending {
		s.b.release(n)
		delete(s.pending, t)
	}
}
