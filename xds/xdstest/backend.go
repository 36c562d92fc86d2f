// Package xdstest holds test helpers for xDS: gRPC test backends, proxyless
// gRPC clients bootstrapped at a control plane, and a raw ADS client that
// plays a node Envoy (state of the world or delta, ACKing or NACKing).
package xdstest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
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

// Backends is a set of backends, each on its own address and port.
type Backends struct {
	ByName  map[string]*Backend
	servers []*Backend
}

// Addresses says where the i-th backend listens (the port is picked free).
type Addresses func(i int) string

// Loopback puts backends on 127.0.0.<first+i> (127.0.0.0/8 is all local on
// Linux), so that pods have distinct IPs.
func Loopback(first int) Addresses {
	return func(i int) string { return fmt.Sprintf("127.0.0.%d", first+i) }
}

// HostAddress puts every backend on this host's first non-loopback IPv4
// address (traffic to it never leaves the host). The Kubernetes API refuses
// loopback addresses in EndpointSlices, so tests that create them in an API
// server use this; they skip when the host has no such address.
func HostAddress(t testing.TB) Addresses {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				ip := ipn.IP.String()
				return func(int) string { return ip }
			}
		}
	}
	t.Skip("skipping: this host has no non-loopback IPv4 address, and the Kubernetes API refuses loopback endpoints")
	return nil
}

// StartBackends starts one backend per name, the i-th on addrs(i) and a
// free port; they stop when the test ends.
func StartBackends(t testing.TB, addrs Addresses, names ...string) *Backends {
	t.Helper()
	bs := &Backends{ByName: map[string]*Backend{}}
	t.Cleanup(bs.Stop)
	for i, name := range names {
		l, err := net.Listen("tcp", net.JoinHostPort(addrs(i), "0"))
		if err != nil {
			t.Fatalf("start backend %s: %v", name, err)
		}
		b := &Backend{Name: name, Addr: l.Addr().String(), srv: grpc.NewServer()}
		testgrpc.RegisterTestServiceServer(b.srv, b)
		go func() { _ = b.srv.Serve(l) }()
		bs.ByName[name] = b
		bs.servers = append(bs.servers, b)
	}
	return bs
}

// IP and Port are where a backend listens.
func (bs *Backends) IP(name string) string {
	host, _, _ := net.SplitHostPort(bs.ByName[name].Addr)
	return host
}

// Port is the port a backend listens on.
func (bs *Backends) Port(name string) int {
	_, port, _ := net.SplitHostPort(bs.ByName[name].Addr)
	n, _ := strconv.Atoi(port)
	return n
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
