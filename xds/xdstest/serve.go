package xdstest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nodemesh/nodemesh/xds"
)

// Serve serves a cache over ADS on a loopback port until the test ends and
// returns the address. The server authenticates as the controller's does,
// with test credentials (auth.go): TLS with the test CA, a test token per
// stream.
func Serve(t testing.TB, c *xds.Cache) string {
	t.Helper()
	addr, stop := ServeAt(t, c, "127.0.0.1:0")
	t.Cleanup(stop)
	return addr
}

// ServeAt serves a cache over ADS at addr with test credentials; stop
// (idempotent) stops the server, closing open streams after a short grace
// period.
func ServeAt(t testing.TB, c *xds.Cache, addr string) (string, func()) {
	t.Helper()
	host, _, _ := net.SplitHostPort(addr)
	return ServeWith(t, c, addr, xds.ServerOptions{Auth: Auth, TLS: ServerTLS(t, host)})
}

// ServeWith serves a cache over ADS at addr with the given options (the
// controller's authenticator and TLS, in tests against an API server).
func ServeWith(t testing.TB, c *xds.Cache, addr string, o xds.ServerOptions) (string, func()) {
	t.Helper()
	var l net.Listener
	var err error
	// A just-closed port of a stopped server can take a moment to free.
	for range 50 {
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := xds.NewServer(ctx, c, o)
	if err != nil {
		cancel()
		l.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	var once sync.Once
	return l.Addr().String(), func() {
		once.Do(func() {
			cancel()
			stop, cancelStop := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancelStop()
			srv.Stop(stop)
			if err := <-done; err != nil {
				t.Errorf("xDS server: %v", err)
			}
		})
	}
}
