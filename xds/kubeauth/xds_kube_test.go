package kubeauth_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/kubeauth"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// TestNodeProxyServedItsNodeOverTLS: a node proxy's projected token (bound
// to its pod, which runs on node A) is served node A — over TLS verified
// with the CA bundle the controller published — on both protocols; a
// client that does not trust that CA gets nothing.
func TestNodeProxyServedItsNodeOverTLS(t *testing.T) {
	c := newCluster(t)
	ctl := c.controller(t, nil)
	tok := c.token(t, c.ns, "envoy-a", api.XDSAudience)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, delta := range []bool{false, true} {
		s, err := xdstest.OpenRawADS(ctx, ctl.addr, delta, ctl.dial(tok)...)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RequestClusters(xdstest.EnvoyNode(c.nodeA)); err != nil {
			t.Fatal(err)
		}
		names, err := s.Next()
		if err != nil || !slices.Equal(names, []string{"only-" + c.nodeA}) {
			t.Errorf("node proxy of node A (delta %v): %v, %v; want its own cluster", delta, names, err)
		}
		s.Close()
	}
	// xdstest's CA is not the controller's.
	s, err := xdstest.OpenRawADS(ctx, ctl.addr, false, xdstest.DialOptions(tok)...)
	var got []string
	if err == nil {
		_ = s.RequestClusters(xdstest.EnvoyNode(c.nodeA))
		got, err = s.Drain()
		s.Close()
	}
	if status.Code(err) != codes.Unavailable || len(got) > 0 {
		t.Errorf("client with another CA: %v, received %v; want Unavailable (certificate) and nothing", err, got)
	}
}

// TestXDSAttacksRefused reproduces, against a real API server, what an
// attacker on the pod network can try on the ADS port, on both protocols:
// each is refused with the code and reason that say why, receives no
// configuration of a node it may not have, and is counted.
func TestXDSAttacksRefused(t *testing.T) {
	c := newCluster(t)
	ctl := c.controller(t, nil)
	ctx := context.Background()
	envoyA := c.token(t, c.ns, "envoy-a", api.XDSAudience)
	app := c.token(t, c.wns, appPod, api.XDSAudience)
	// A pod that is gone: its token was valid while it ran.
	gone := c.pod(t, c.ns, "envoy-gone", api.NodeProxyServiceAccount, c.nodeB, "192.168.0.12")
	goneTok := c.token(t, c.ns, "envoy-gone", api.XDSAudience)
	if err := c.env.Client.CoreV1().Pods(c.ns).Delete(ctx, gone.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	unbound := c.tokenFor(t, c.ns, api.NodeProxyServiceAccount, api.XDSAudience, nil)
	// A node proxy account's token bound to a Secret, not a pod.
	sec, err := c.env.Client.CoreV1().Secrets(c.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "some-secret"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secretBound := c.tokenFor(t, c.ns, api.NodeProxyServiceAccount, api.XDSAudience,
		&authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: sec.Name, UID: sec.UID})

	for name, tc := range map[string]struct {
		token        string
		first, later *corev3.Node
		own          string // the client's own cluster, which it may receive first
		code         codes.Code
		reason       string
	}{
		"no token": {"", xdstest.EnvoyNode(c.nodeA), nil, "", codes.Unauthenticated, xds.ReasonNoToken},
		// The pod's default token (the API server's audience) is not an
		// xDS token: a leaked API token does not open the ADS port.
		"API server audience": {c.token(t, c.ns, "envoy-a", ""), xdstest.EnvoyNode(c.nodeA), nil, "", codes.Unauthenticated, xds.ReasonBadToken},
		"forged token":        {forged(envoyA), xdstest.EnvoyNode(c.nodeA), nil, "", codes.Unauthenticated, xds.ReasonRejected},
		// Another pod's token, claiming a node.
		"application pod as node A": {app, xdstest.EnvoyNode(c.nodeA), nil, "", codes.PermissionDenied, xds.ReasonNotNodeProxy},
		// The node proxies' account name in another namespace is nobody's.
		"lookalike account as node A": {c.token(t, c.wns, "fake-envoy", api.XDSAudience), xdstest.EnvoyNode(c.nodeA), nil, "", codes.PermissionDenied, xds.ReasonNotNodeProxy},
		// A valid node proxy token, another node's name.
		"node A's proxy as node B":        {envoyA, xdstest.EnvoyNode(c.nodeB), nil, "", codes.PermissionDenied, xds.ReasonWrongNode},
		"node A's proxy as a gRPC client": {envoyA, xdstest.GRPCNode(c.nodeA), nil, "", codes.PermissionDenied, xds.ReasonWrongNode},
		// Served its own node, then switching the stream to another.
		"node A's proxy switching to node B": {envoyA, xdstest.EnvoyNode(c.nodeA), xdstest.EnvoyNode(c.nodeB), "only-" + c.nodeA, codes.PermissionDenied, xds.ReasonNodeSwitch},
		"deleted pod's token":                {goneTok, xdstest.EnvoyNode(c.nodeB), nil, "", codes.Unauthenticated, xds.ReasonRejected},
		"token bound to no pod":              {unbound, xdstest.EnvoyNode(c.nodeA), nil, "", codes.PermissionDenied, xds.ReasonNotPodBound},
		"token bound to a Secret":            {secretBound, xdstest.EnvoyNode(c.nodeA), nil, "", codes.PermissionDenied, xds.ReasonNotPodBound},
		"application with another pod's ID":  {app, xdstest.GRPCNode(kubeauth.ProxylessNodeID("10.9.9.9", "other", c.wns, c.clusterDomain)), nil, "", codes.PermissionDenied, xds.ReasonWrongNode},
		"application with another IP":        {app, xdstest.GRPCNode(kubeauth.ProxylessNodeID("10.9.9.9", appPod, c.wns, c.clusterDomain)), nil, "", codes.PermissionDenied, xds.ReasonWrongNode},
	} {
		for _, delta := range []bool{false, true} {
			proto := map[bool]string{false: "sotw", true: "delta"}[delta]
			t.Run(name+"/"+proto, func(t *testing.T) {
				before := testutil.ToFloat64(ctl.metrics.Refusals.WithLabelValues("xds", tc.reason))
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				s, err := xdstest.OpenRawADS(ctx, ctl.addr, delta, ctl.dial(tc.token)...)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				got, err := s.Attempt(tc.first, tc.later, nil)
				for _, n := range got {
					if n != tc.own {
						t.Errorf("received %q", n)
					}
				}
				if status.Code(err) != tc.code {
					t.Fatalf("stream ended with %v, want %v", err, tc.code)
				}
				if d := testutil.ToFloat64(ctl.metrics.Refusals.WithLabelValues("xds", tc.reason)) - before; d != 1 {
					t.Errorf("refusals{reason=%q} went up by %v, want 1 (%v)", tc.reason, d, err)
				}
				t.Logf("%v", status.Convert(err).Message())
			})
		}
	}
}

// forged is a token with its signature's last byte changed.
func forged(tok string) string {
	b := []byte(tok)
	if b[len(b)-2] == 'A' {
		b[len(b)-2] = 'B'
	} else {
		b[len(b)-2] = 'A'
	}
	return string(b)
}

// TestProxylessClientServedAsItself: grpc-go's own xDS client, with the
// bootstrap a proxyless application has (TLS with the published CA, the
// pod's projected token as gRFC A97 call credentials, Istio's node ID
// format), is served and routes calls.
func TestProxylessClientServedAsItself(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := xdstest.NewBookinfo(t, "bookinfo", xdstest.Loopback(30))
	gen := xds.NewGeneration(1, time.Now(), b.Bag(), nil, translate.Options{})
	ctl := c.controller(t, func(n *corev3.Node) *xds.Config { return gen.ForNode(n.GetId(), xds.KindOf(n)) })
	id := kubeauth.ProxylessNodeID(c.appIP, appPod, c.wns, c.clusterDomain)
	dir := t.TempDir()
	caFile, tokFile := writeFile(t, dir, "ca.pem", ctl.caPEM), writeFile(t, dir, "token", []byte(c.token(t, c.wns, appPod, api.XDSAudience)))
	client := xdstest.NewGRPCClientWith(t, xdstest.Bootstrap(ctl.addr, id, caFile, tokFile))
	xdstest.CheckBookinfo(t, ctx, b, client)
	if !slices.Contains(ctl.cache.Nodes(), id) {
		t.Errorf("connected nodes %v lack %s", ctl.cache.Nodes(), id)
	}
}

// TestTokensCached: a verified token is not reviewed again, and its pod
// not looked up again — not by a client reconnecting, not by streams
// opening together — until it expires; a new token is checked once.
func TestTokensCached(t *testing.T) {
	c := newCluster(t)
	ctl := c.controller(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	serve := func(tok string) error {
		s, err := xdstest.OpenRawADS(ctx, ctl.addr, true, ctl.dial(tok)...)
		if err != nil {
			return err
		}
		defer s.Close()
		if err := s.RequestClusters(xdstest.EnvoyNode(c.nodeA)); err != nil {
			return err
		}
		_, err = s.Next()
		return err
	}
	tok := c.token(t, c.ns, "envoy-a", api.XDSAudience)
	for i := range 5 { // reconnects, each on a new connection
		if err := serve(tok); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	if n, g := ctl.reviews.n.Load(), ctl.podGets.Load(); n != 1 || g != 1 {
		t.Errorf("5 connections with one token: %d TokenReviews and %d pod lookups, want 1 and 1", n, g)
	}
	// Ten streams with a new token at once: one review between them.
	tok2 := c.token(t, c.ns, "envoy-a", api.XDSAudience)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() { errs <- serve(tok2) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, g := ctl.reviews.n.Load(), ctl.podGets.Load(); n != 2 || g != 2 {
		t.Errorf("then 10 concurrent streams with a new token: %d TokenReviews and %d pod lookups in all, want 2 and 2", n, g)
	}
	// Refused tokens are not remembered as accepted: a refused client
	// stays refused.
	app := c.token(t, c.wns, appPod, api.XDSAudience)
	for range 2 {
		if err := serve(app); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("application pod as node A: %v", err)
		}
	}
}
