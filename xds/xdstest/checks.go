package xdstest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// WaitRouting calls until every one of n calls satisfies cond (the routing
// has arrived) or the timeout passes.
func WaitRouting(t *testing.T, ctx context.Context, c testgrpc.TestServiceClient, timeout time.Duration, what string, cond func(Tally) bool, md ...string) Tally {
	t.Helper()
	tally, ok := Eventually(ctx, c, timeout, 20, cond, md...)
	if !ok {
		t.Fatalf("%s: not within %v; last 20 calls: %v (last error: %s)", what, timeout, tally, LastError())
	}
	return tally
}

// Only says that every call was answered by backend.
func Only(backend string) func(Tally) bool {
	return func(t Tally) bool { return t[backend] == t.Total() }
}

// CheckBookinfo checks, as subtests, that a gRPC client's calls follow
// ReviewsRouting and the ratings VirtualService: the weighted split within
// statistical tolerance, header-match routing (case-sensitive), fault abort
// and delay, the route timeout (as max_stream_duration) and retries on
// UNAVAILABLE.
func CheckBookinfo(t *testing.T, ctx context.Context, b *Bookinfo, client *GRPCClient) {
	reviews := client.Dial(b.Target("reviews"))
	ratings := client.Dial(b.Target("ratings"))
	// The first calls wait for LDS, RDS, CDS and EDS.
	WaitRouting(t, ctx, reviews, 30*time.Second, "jason routed to reviews-v2", Only("reviews-v2"), "end-user", "jason")

	t.Run("weighted split 80/20", func(t *testing.T) {
		const n = 1000
		tally := Calls(ctx, reviews, n)
		// 80% of 1000 has a standard deviation of about 12.6; allow ±60
		// (almost 5σ) so the check fails on a wrong split, not on chance.
		if tally["reviews-v1"]+tally["reviews-v3"] != n || tally["reviews-v1"] < 740 || tally["reviews-v1"] > 860 {
			t.Errorf("want about 800 reviews-v1 and 200 reviews-v3 of %d, got %v", n, tally)
		}
		t.Logf("%d calls: %v", n, tally)
	})
	t.Run("header match", func(t *testing.T) {
		if tally := Calls(ctx, reviews, 50, "end-user", "jason"); tally["reviews-v2"] != 50 {
			t.Errorf("end-user: jason: want 50 reviews-v2, got %v", tally)
		}
		// Header values match case-sensitively: Jason falls through to the
		// split, which never picks v2.
		if tally := Calls(ctx, reviews, 50, "end-user", "Jason"); tally["reviews-v2"] != 0 || tally.Total() != tally["reviews-v1"]+tally["reviews-v3"] {
			t.Errorf("end-user: Jason: want the default split, got %v", tally)
		}
	})
	t.Run("fault abort", func(t *testing.T) {
		b.Backends.ResetCalls()
		tally := Calls(ctx, reviews, 20, "x-fault", "abort")
		if tally[codes.Unavailable.String()] != 20 {
			t.Errorf("want 20 UNAVAILABLE, got %v", tally)
		}
		if n := b.Backends.ByName["reviews-v1"].Calls(); n != 0 {
			t.Errorf("aborted calls must not reach the backend; reviews-v1 got %d", n)
		}
	})
	t.Run("fault delay", func(t *testing.T) {
		for range 3 {
			r := Call(ctx, reviews, "x-fault", "delay")
			if r.Code != codes.OK || r.Backend != "reviews-v1" || r.Elapsed < 300*time.Millisecond || r.Elapsed > 3*time.Second {
				t.Errorf("want reviews-v1 after about 300ms, got %v from %q after %v", r.Code, r.Backend, r.Elapsed)
			}
		}
	})
	t.Run("timeout", func(t *testing.T) {
		r := Call(ctx, reviews, "x-timeout", "short", SleepHeader, "1000")
		if r.Code != codes.DeadlineExceeded || r.Elapsed < 200*time.Millisecond || r.Elapsed > 900*time.Millisecond {
			t.Errorf("timeout 200ms, backend sleeping 1s: want DEADLINE_EXCEEDED after about 200ms, got %v after %v", r.Code, r.Elapsed)
		}
		// Routes without a timeout have none (Istio's default).
		r = Call(ctx, reviews, "end-user", "jason", SleepHeader, "400")
		if r.Code != codes.OK || r.Elapsed < 400*time.Millisecond {
			t.Errorf("no timeout, backend sleeping 400ms: want OK, got %v after %v", r.Code, r.Elapsed)
		}
	})
	t.Run("retries on unavailable", func(t *testing.T) {
		flaky := b.Backends.ByName["ratings-v1"]
		WaitRouting(t, ctx, ratings, 20*time.Second, "ratings reachable", func(t Tally) bool { return t["ratings-v1"] > 0 })
		// ratings-v1 fails every call but each third: with 3 retries every
		// call succeeds on its third attempt.
		flaky.ResetCalls()
		if tally := Calls(ctx, ratings, 30); tally["ratings-v1"] != 30 {
			t.Errorf("retries: 3: want 30 OK, got %v", tally)
		}
		if n := flaky.Calls(); n != 90 {
			t.Errorf("retries: 3: want 90 attempts for 30 calls, got %d", n)
		}
		// retries: {attempts: 0} turns retries off: two calls in three fail.
		flaky.ResetCalls()
		if tally := Calls(ctx, ratings, 30, "x-retry", "off"); tally["ratings-v1"] != 10 || tally[codes.Unavailable.String()] != 20 {
			t.Errorf("retries off: want 10 OK and 20 UNAVAILABLE, got %v", tally)
		}
	})
}
