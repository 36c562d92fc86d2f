package xds

import (
	"log/slog"
	"sync"
	"time"
)

// refusalLog logs a refused client once per window: a client that retries
// every second, or an attacker that opens thousands of streams, must not
// flood the log. A client is its address, the principal it authenticated
// as (if any), the endpoint and the reason. At most refusalLogKeys clients
// are remembered per window; refusals of any more are only counted, and
// the count is logged when the window ends. Every refusal is counted in
// nodemesh_auth_refusals_total regardless.
type refusalLog struct {
	log    *slog.Logger
	window time.Duration
	now    func() time.Time

	mu         sync.Mutex
	start      time.Time
	seen       map[refusalKey]bool
	suppressed int
}

type refusalKey struct{ endpoint, client, principal, reason string }

const (
	refusalLogWindow = 10 * time.Minute
	refusalLogKeys   = 1024
)

func newRefusalLog(l *slog.Logger) *refusalLog {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &refusalLog{log: l, window: refusalLogWindow, now: time.Now, seen: map[refusalKey]bool{}}
}

// refused logs r for a client unless it was logged in this window.
func (l *refusalLog) refused(endpoint, client, principal string, r *Refusal) {
	now := l.now()
	l.mu.Lock()
	if now.Sub(l.start) >= l.window {
		if l.suppressed > 0 {
			l.log.Warn("more clients were refused than logged", "not-logged", l.suppressed, "window", l.window)
		}
		l.start, l.seen, l.suppressed = now, map[refusalKey]bool{}, 0
	}
	k := refusalKey{endpoint, client, principal, r.Reason}
	if l.seen[k] {
		l.mu.Unlock()
		return
	}
	if len(l.seen) >= refusalLogKeys {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.seen[k] = true
	l.mu.Unlock()
	// The message is ours (it may quote a node ID the client sent: bounded
	// by the gRPC message size, and logged once per window).
	l.log.Warn("client refused (logged once per client per window; every refusal is counted in nodemesh_auth_refusals_total)",
		"endpoint", endpoint, "client", client, "principal", principal, "reason", r.Reason, "code", r.Code.String(), "detail", truncate(r.Message, 512))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
