package xdstest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nodemesh/nodemesh/xds"
)

// Serve serves a cache over ADS on a loopback port until the test ends and
// returns the address.
func Serve(t testing.TB, c *xds.Cache) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := xds.NewServer(ctx, c)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		cancel()
		stop, cancelStop := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancelStop()
		srv.Stop(stop)
		if err := <-done; err != nil {
			t.Errorf("xDS server: %v", err)
		}
	})
	return l.Addr().String()
}
