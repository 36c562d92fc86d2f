package workloadcert

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Istio's rotation defaults (pilot-agent SECRET_GRACE_PERIOD_RATIO and
// SECRET_GRACE_PERIOD_RATIO_JITTER): a certificate is renewed when half of
// its lifetime is left, ±1% so that a fleet does not renew at once.
const (
	DefaultGraceRatio       = 0.5
	DefaultGraceRatioJitter = 0.01
	// DefaultMaxIdentities bounds the certificates one node holds (a node
	// runs at most ~110 pods by default; identities are fewer).
	DefaultMaxIdentities = 1024
)

// Issuer signs a certificate for an identity (*CAClient).
type Issuer interface {
	Issue(ctx context.Context, id ID) (*Issued, error)
}

// Sink receives the manager's changes (the SDS server). Calls come from
// one goroutine at a time.
type Sink interface {
	// Update serves iss for its identity (and its root as the trust bundle).
	Update(iss *Issued)
	// Remove stops serving the identity.
	Remove(id ID)
}

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	Issuer Issuer
	Sink   Sink
	Logger *slog.Logger
	// GraceRatio and GraceRatioJitter: renewal when GraceRatio (±jitter)
	// of the lifetime is left (defaults DefaultGraceRatio,
	// DefaultGraceRatioJitter).
	GraceRatio, GraceRatioJitter float64
	// MaxIdentities bounds the identities held (default
	// DefaultMaxIdentities); those beyond it, in sorted order, get no
	// certificate (their workloads' mTLS fails closed) and are logged.
	MaxIdentities int
	// MinBackoff and MaxBackoff bound the retry delay after a failure
	// (defaults 1s and 2m), doubled per consecutive failure, ±20%.
	MinBackoff, MaxBackoff time.Duration
	// IssueTimeout bounds one request to the CA (default 30s).
	IssueTimeout time.Duration
}

// Manager keeps a certificate for every wanted identity.
type Manager struct {
	o ManagerOptions

	mu      sync.Mutex
	entries map[ID]*entry
	changed chan struct{}
	over    []ID // identities refused by MaxIdentities (last SetIdentities)
}

type entry struct {
	issued   *Issued
	next     time.Time // when to (re)issue
	failures int
}

// NewManager returns a Manager; Run does the work.
func NewManager(o ManagerOptions) (*Manager, error) {
	if o.Issuer == nil || o.Sink == nil {
		return nil, errors.New("certificate manager: an issuer and a sink are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.GraceRatio == 0 {
		o.GraceRatio = DefaultGraceRatio
	}
	if o.GraceRatioJitter == 0 {
		o.GraceRatioJitter = DefaultGraceRatioJitter
	}
	if o.GraceRatio <= 0 || o.GraceRatio >= 1 || o.GraceRatioJitter < 0 || o.GraceRatioJitter >= o.GraceRatio {
		return nil, errors.New("certificate manager: grace ratio must be in (0,1) and its jitter smaller")
	}
	if o.MaxIdentities <= 0 {
		o.MaxIdentities = DefaultMaxIdentities
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(2*time.Minute, o.MinBackoff)
	}
	if o.IssueTimeout <= 0 {
		o.IssueTimeout = 30 * time.Second
	}
	return &Manager{o: o, entries: map[ID]*entry{}, changed: make(chan struct{}, 1)}, nil
}

// SetIdentities makes ids the wanted set: new ones are issued at once,
// those not in it any more are removed from the sink. It returns the
// identities left out by MaxIdentities.
func (m *Manager) SetIdentities(ids []ID) []ID {
	ids = slices.Clone(ids)
	slices.SortFunc(ids, func(a, b ID) int { return compareIDs(a, b) })
	ids = slices.Compact(ids)
	var over []ID
	if len(ids) > m.o.MaxIdentities {
		ids, over = ids[:m.o.MaxIdentities], ids[m.o.MaxIdentities:]
	}
	want := make(map[ID]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	m.mu.Lock()
	var removed []ID
	for id := range m.entries {
		if !want[id] {
			removed = append(removed, id)
			delete(m.entries, id)
		}
	}
	for _, id := range ids {
		if m.entries[id] == nil {
			m.entries[id] = &entry{}
		}
	}
	if len(over) > 0 && !slices.Equal(over, m.over) {
		m.o.Logger.Warn("too many workload identities on this node: these get no certificate", "limit", m.o.MaxIdentities, "identities", len(over), "first", over[0].String())
	}
	m.over = over
	// Removal happens here, under the lock, so that an issuance in flight
	// for a removed identity cannot be published after it (Run checks
	// the entry still exists before Update, under the same lock).
	for _, id := range removed {
		m.o.Sink.Remove(id)
	}
	m.mu.Unlock()
	select {
	case m.changed <- struct{}{}:
	default:
	}
	return over
}

// Run issues and renews certificates until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		due, wait := m.due(time.Now())
		for _, id := range due {
			if ctx.Err() != nil {
				return nil
			}
			m.issue(ctx, id)
		}
		if len(due) > 0 {
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-m.changed:
		case <-timer.C:
		}
	}
}

// due returns the identities to issue now, and how long until the next
// one is due otherwise.
func (m *Manager) due(now time.Time) ([]ID, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	wait := time.Hour
	var due []ID
	for id, e := range m.entries {
		if !e.next.After(now) {
			due = append(due, id)
		} else if d := e.next.Sub(now); d < wait {
			wait = d
		}
	}
	slices.SortFunc(due, compareIDs)
	return due, wait
}

func (m *Manager) issue(ctx context.Context, id ID) {
	ictx, cancel := context.WithTimeout(ctx, m.o.IssueTimeout)
	iss, err := m.o.Issuer.Issue(ictx, id)
	cancel()
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[id]
	if e == nil {
		return // its last pod left while the CA was asked
	}
	if err != nil {
		e.failures++
		e.next = now.Add(m.backoff(e.failures))
		m.o.Logger.Warn("workload certificate not issued", "identity", id.String(), "failures", e.failures, "retry", e.next.Sub(now).Round(time.Millisecond), "err", err)
		return
	}
	e.issued, e.failures = iss, 0
	e.next = RotateAt(now, iss.NotAfter, m.o.GraceRatio, m.o.GraceRatioJitter)
	m.o.Logger.Info("workload certificate issued", "identity", id.String(), "expires", iss.NotAfter, "renew", e.next)
	m.o.Sink.Update(iss)
}

func (m *Manager) backoff(failures int) time.Duration {
	d := m.o.MinBackoff
	for i := 1; i < failures && d < m.o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, m.o.MaxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64())) // #nosec: jitter only
}

// RotateAt is istio-agent's renewal time: when graceRatio (moved up or
// down by up to jitter, at random) of the lifetime from created to expires
// is left.
func RotateAt(created, expires time.Time, graceRatio, jitter float64) time.Time {
	r := graceRatio + jitter*(2*rand.Float64()-1)
	r = min(max(r, 0), 1)
	life := expires.Sub(created)
	return expires.Add(-time.Duration(r * float64(life)))
}

func compareIDs(a, b ID) int {
	switch {
	case a.String() < b.String():
		return -1
	case a.String() > b.String():
		return 1
	}
	return 0
}
