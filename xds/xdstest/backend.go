// Package xdstest holds test helpers for xDS: gRPC test backends, proxyless
// gRPC clients bootstrapped at a control plane, and a raw ADS client that
// plays a node Envoy (state of the world or delta, ACKing or NACKing).
package xdstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Metadata keys the backends understand.
const (
	// SleepHeader makes a backend sleep that many milliseconds before
	// answering (or until the call's deadline).
	SleepHeader = "x-sleep-ms"
)

// Backend is a grpc.testing TestService server that answers UnaryCall with
// its name as ServerId.
type Backend struct {
	testgrpc.UnimplementedTestServiceServer
	Name string
	Addr string // ip:port
	// FailEvery makes every call but each FailEvery-th fail with UNAVAILABLE
	// (trailers only, so gRPC may retry it); 0 never fails.
	FailEvery int64
	calls     atomic.Int64
	srv       *grpc.Server
}

// Calls is how many calls the backend has received.
func (b *Backend) Calls() int64 { return b.calls.Load() }

// ResetCalls zeroes the call counter.
func (b *Backend) ResetCalls() { b.calls.Store(0) }

// UnaryCall answers with the backend's name.
func (b *Backend) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	n := b.calls.Add(1)
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(SleepHeader); len(v) > 0 {
			ms, _ := strconv.Atoi(v[0])
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
	}
	if b.FailEvery > 0 && n%b.FailEvery != 0 {
		return nil, status.Errorf(codes.Unavailable, "%s: failing on purpose (call %d)", b.Name, n)
	}
	return &testgrpc.SimpleResponse{ServerId: b.Name}, nil
}

// EmptyCall answers.
func (b *Backend) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	b.calls.Add(1)
	return &testgrpc.Empty{}, nil
}

// Backends is a set of backends listening on one port of several loopback
// addresses (127.0.0.0/8 is all local on Linux), so that pods with distinct
// IPs and one container port can be described to the translator.
type Backends struct {
	Port    int
	ByName  map[string]*Backend
	servers []*Backend
}

// StartBackends starts one backend per name on 127.0.0.<first+i>:port with a
// port free on all of them; they stop when the test ends.
func StartBackends(t testing.TB, first int, names ...string) *Backends {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		bs, err := startBackends(first, names)
		if err == nil {
			t.Cleanup(bs.Stop)
			return bs
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("start backends: %v", err)
		}
	}
	t.Fatal("start backends: no port free on every address after 20 attempts")
	return nil
}

func startBackends(first int, names []string) (*Backends, error) {
	probe, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", first))
	if err != nil {
		return nil, err
	}
	port := probe.Addr().(*net.TCPAddr).Port
	bs := &Backends{Port: port, ByName: map[string]*Backend{}}
	for i, name := range names {
		var l net.Listener
		if i == 0 {
			l = probe
		} else if l, err = net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", first+i, port)); err != nil {
			bs.Stop()
			return nil, err
		}
		b := &Backend{Name: name, Addr: l.Addr().String(), srv: grpc.NewServer()}
		testgrpc.RegisterTestServiceServer(b.srv, b)
		go func() { _ = b.srv.Serve(l) }()
		bs.ByName[name] = b
		bs.servers = append(bs.servers, b)
	}
	return bs, nil
}

// IP is the address of the i-th backend started.
func (bs *Backends) IP(name string) string {
	host, _, _ := net.SplitHostPort(bs.ByName[name].Addr)
	return host
}

// ResetCalls zeroes every backend's call counter.
func (bs *Backends) ResetCalls() {
	for _, b := range bs.servers {
		b.ResetCalls()
	}
}

// Stop stops every backend.
func (bs *Backends) Stop() {
	var wg sync.WaitGroup
	for _, b := range bs.servers {
		wg.Go(b.srv.Stop)
	}
	wg.Wait()
}
