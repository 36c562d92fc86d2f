package xds

import (
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
)

type fakeStream struct {
	grpc.ServerStream
	sent int
	// during records how much budget was free while a message was sent.
	during []bool
	b      *sendBudget
}

func (f *fakeStream) SendMsg(any) error {
	f.sent++
	f.during = append(f.during, f.b.sem.TryAcquire(f.b.limit))
	return nil
}

// The budget bounds bytes in flight, caps a response bigger than itself at
// the whole budget, stops waiting after its timeout, and is given back once
// a message is sent — whether it was taken while building the message or by
// the stream.
func TestSendBudget(t *testing.T) {
	b := newSendBudget(100)
	b.wait = 50 * time.Millisecond
	if got := b.acquire(60); got != 60 {
		t.Fatalf("acquire(60) = %d", got)
	}
	start := time.Now()
	if got := b.acquire(60); got != 0 {
		t.Errorf("over budget: acquire(60) = %d, want 0 after the wait", got)
	}
	if time.Since(start) < b.wait {
		t.Error("gave up without waiting")
	}
	b.release(60)
	if got := b.acquire(1000); got != 100 {
		t.Errorf("acquire(1000) = %d, want the whole budget", got)
	}
	b.release(100)

	// Taken while building, returned after SendMsg.
	fs := &fakeStream{b: b}
	s := &budgetStream{ServerStream: fs, b: b, pending: map[string]int64{}}
	msg := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Resources: []*discoveryv3.Resource{{Name: "a", Resource: &anypb.Any{Value: make([]byte, 80)}}}}
	b.hold(msg, b.acquire(80))
	if err := s.SendMsg(msg); err != nil {
		t.Fatal(err)
	}
	if fs.during[0] {
		t.Error("the budget taken while building was free during the send")
	}
	if b.sem.TryAcquire(21) { // 80 of 100 are the response's
		t.Fatal("budget given back before the node answered")
	}
	// The node's ACK (the next request of the type) gives it back.
	if err := s.RecvMsg(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: msg.TypeUrl}); err != nil {
		t.Fatal(err)
	}
	if !b.sem.TryAcquire(100) {
		t.Fatal("budget not given back after the node answered")
	}
	b.release(100)
	// Not built by the cache (state of the world): the stream takes it,
	// and gives it back when the stream ends.
	if err := s.SendMsg(&discoveryv3.DiscoveryResponse{TypeUrl: "t", Resources: []*anypb.Any{{Value: make([]byte, 500)}}}); err != nil {
		t.Fatal(err)
	}
	if fs.during[1] {
		t.Error("a state-of-the-world response was sent without budget")
	}
	s.releaseAll()
	if !b.sem.TryAcquire(100) {
		t.Fatal("budget not given back when the stream ended")
	}
}

func (f *fakeStream) RecvMsg(any) error { return nil }
