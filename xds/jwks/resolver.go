// Package jwks fetches the JSON Web Key Sets of RequestAuthentication rules
// that name a jwksUri (or only an issuer, through OpenID discovery) for the
// controller, as istiod's jwks_resolver does with its default
// PILOT_JWT_ENABLE_REMOTE_JWKS=false: the controller fetches, the node
// Envoys get the keys inline (docs/design/policy.md §9).
//
// The controller runs with the cluster's credentials next to the API
// server, so a URI in a RequestAuthentication — which anyone who may write
// one in their namespace chooses — is untrusted input that makes the
// controller open connections. The resolver bounds what it can do:
//   - addresses that are the controller's own or the node's (loopback,
//     unspecified), link-local (cloud metadata services at 169.254.169.254)
//     and multicast are refused when the connection is dialled, after name
//     resolution, so a name that resolves (or rebinds) to one is refused too;
//   - no redirects (a redirect is an error, never followed);
//   - the rule's timeout (Istio's default 5 s) bounds each fetch, and a
//     document larger than MaxDocument is an error;
//   - errors never carry the response body (a key server's error page, or
//     anything a hostile URI returns, does not end up in Events and logs);
//   - the cache is bounded (MaxEntries) and entries nobody asked for during
//     Expire are dropped.
//
// Translation must not wait on the network: Lookup answers from the cache,
// and on a miss starts the fetch in the background and returns ErrPending
// (the translator then gives the rule istiod's rejecting key set — deny
// more — until the keys arrive, and OnChange asks for a new translation).
// Cached key sets are refreshed every Refresh; a refresh that fails keeps
// the last good keys, as istiod does.
//
// It imports only the standard library (the documents are checked and
// reduced to their public keys by the translator, translate.WorkloadJWT).
package jwks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrPending is returned by Lookup while the key set is being fetched.
var ErrPending = errors.New("the key set is being fetched")

// Defaults, Istio's where it has one.
const (
	// MaxDocument bounds a key set or discovery document (istiod reads
	// whole bodies; a hostile server could make it hold any amount).
	MaxDocument = 1 << 20
	// MaxEntries bounds the cache: distinct (issuer, uri) pairs.
	MaxEntries = 1024
	// DefaultRefresh is istiod's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL.
	DefaultRefresh = 20 * time.Minute
	// DefaultExpire drops entries no translation asked for in this long
	// (istiod: JwtPubKeyEvictionDuration, 24 h).
	DefaultExpire = 24 * time.Hour
	// DefaultTimeout is RequestAuthentication's default timeout.
	DefaultTimeout = 5 * time.Second
)

// Options configure a Resolver. The zero value is the production setting.
type Options struct {
	Refresh time.Duration
	Expire  time.Duration
	// OnChange is called (without locks held) when a key set arrives or
	// changes, so that the caller translates again.
	OnChange func()
	// AllowAddress decides whether the resolver may connect to an address;
	// nil is SafeAddress. Tests on loopback replace it.
	AllowAddress func(netip.Addr) bool
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// SafeAddress refuses the addresses a fetch must never reach: loopback,
// unspecified, link-local (IPv4 169.254/16 with the cloud metadata
// services, IPv6 fe80::/10), multicast, and IPv4-mapped forms of those.
func SafeAddress(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsLoopback() && !a.IsUnspecified() && !a.IsLinkLocalUnicast() &&
		!a.IsLinkLocalMulticast() && !a.IsInterfaceLocalMulticast() && !a.IsMulticast()
}

type key struct{ issuer, uri string }

type entry struct {
	doc      string
	err      error
	fetched  time.Time
	used     time.Time
	inFlight bool
	timeout  time.Duration
}

// Resolver fetches and caches key sets. Its methods are safe for
// concurrent use.
type Resolver struct {
	opts   Options
	client *http.Client

	mu      sync.Mutex
	entries map[key]*entry
}

// New returns a Resolver; Run refreshes its entries.
func New(opts Options) *Resolver {
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.Expire <= 0 {
		opts.Expire = DefaultExpire
	}
	if opts.AllowAddress == nil {
		opts.AllowAddress = SafeAddress
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Resolver{opts: opts, entries: map[key]*entry{}}
	dialer := &net.Dialer{
		Timeout: 10 * time.Second,
		// Control runs for the address actually dialled, after
		// resolution: a name that resolves to a refused address is
		// refused, whatever it resolved to earlier.
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("refusing to connect to %q: %w", address, err)
			}
			if !r.opts.AllowAddress(ap.Addr()) {
				return fmt.Errorf("refusing to connect to %s: loopback, link-local, multicast and unspecified addresses are not key servers", ap.Addr())
			}
			return nil
		},
	}
	transport := &http.Transport{
		Proxy:                  nil, // the controller's environment proxy would see the URIs
		DialContext:            dialer.DialContext,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  10 * time.Second,
		MaxIdleConns:           16,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	r.client = &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("redirects are not followed")
		},
	}
	return r
}

// Lookup returns the key set of (issuer, uri): uri's document, or with uri
// empty the one at the jwks_uri of issuer's OpenID discovery document. It
// never waits on the network: a key set not fetched yet starts a fetch and
// returns ErrPending; a failed first fetch returns its error (and is
// retried at the next refresh); a failed refresh keeps the last good keys.
// Its signature is translate.JWKSFunc's.
func (r *Resolver) Lookup(issuer, uri string, timeout time.Duration) (string, error) {
	if uri == "" && issuer == "" {
		return "", errors.New("neither jwksUri nor issuer is set")
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	k := key{issuer, uri}
	now := r.opts.Now()
	r.mu.Lock()
	e := r.entries[k]
	if e == nil {
		if len(r.entries) >= MaxEntries {
			r.mu.Unlock()
			return "", fmt.Errorf("more than %d distinct key sets are in use", MaxEntries)
		}
		e = &entry{inFlight: true, timeout: timeout}
		r.entries[k] = e
		e.used = now
		r.mu.Unlock()
		go r.fetch(k, timeout)
		return "", ErrPending
	}
	e.used = now
	e.timeout = timeout
	doc, err, inFlight := e.doc, e.err, e.inFlight
	r.mu.Unlock()
	switch {
	case doc != "":
		return doc, nil
	case err != nil:
		return "", err
	case inFlight:
		return "", ErrPending
	}
	return "", ErrPending
}

// fetch gets one key set and stores it; OnChange is called when the stored
// document changed or a first attempt ended.
func (r *Resolver) fetch(k key, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	doc, err := r.Fetch(ctx, k.issuer, k.uri)
	r.mu.Lock()
	e := r.entries[k]
	if e == nil { // expired meanwhile
		r.mu.Unlock()
		return
	}
	first := e.doc == "" && e.err == nil
	changed := false
	e.inFlight = false
	switch {
	case err == nil:
		changed = doc != e.doc || e.err != nil
		e.doc, e.err, e.fetched = doc, nil, r.opts.Now()
	case e.doc == "":
		// No good keys yet: remember the error (a refresh that fails
		// keeps the last good keys instead).
		changed = e.err == nil || e.err.Error() != err.Error()
		e.err = err
	}
	r.mu.Unlock()
	if (changed || first) && r.opts.OnChange != nil {
		r.opts.OnChange()
	}
}

// Fetch reads the key set of (issuer, uri) now, within ctx.
func (r *Resolver) Fetch(ctx context.Context, issuer, uri string) (string, error) {
	if uri == "" {
		var err error
		if uri, err = r.discover(ctx, issuer); err != nil {
			return "", err
		}
	}
	body, err := r.get(ctx, uri)
	if err != nil {
		return "", err
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil || set.Keys == nil {
		return "", fmt.Errorf("%s did not return a JSON Web Key Set", redact(uri))
	}
	return string(body), nil
}

// discover reads issuer's OpenID discovery document for its jwks_uri.
func (r *Resolver) discover(ctx context.Context, issuer string) (string, error) {
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	body, err := r.get(ctx, u)
	if err != nil {
		return "", err
	}
	var d struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &d); err != nil || d.JWKSURI == "" {
		return "", fmt.Errorf("%s is not an OpenID discovery document with a jwks_uri", redact(u))
	}
	return d.JWKSURI, nil
}

// get reads one document: http or https only, no redirects, at most
// MaxDocument bytes; errors name the URI (without credentials or query)
// and the status, never the body.
func (r *Resolver) get(ctx context.Context, raw string) ([]byte, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http(s) URL", redact(raw))
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s: credentials in a key server URL are not sent", redact(raw))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redact(raw), err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", redact(raw), unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: %s", redact(raw), resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", redact(raw), err)
	}
	if len(body) > MaxDocument {
		return nil, fmt.Errorf("get %s: the document is larger than %d bytes", redact(raw), MaxDocument)
	}
	return body, nil
}

// unwrapURLError drops url.Error's repetition of the whole URL (which may
// carry a query the redacted form leaves out).
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redact is a URL as it may appear in Events and logs: scheme, host and
// path, no user info, query or fragment.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if len(raw) > 64 {
			raw = raw[:64] + "…"
		}
		return fmt.Sprintf("%q", raw)
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	s := u.String()
	if len(s) > 256 {
		s = s[:256] + "…"
	}
	return s
}

// Run refreshes the cached key sets every Refresh and drops those no one
// looked up for Expire, until ctx ends.
func (r *Resolver) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.refresh()
		}
	}
}

// refresh starts a fetch for every entry not already being fetched and
// drops expired ones.
func (r *Resolver) refresh() {
	now := r.opts.Now()
	type job struct {
		k       key
		timeout time.Duration
	}
	var jobs []job
	r.mu.Lock()
	for k, e := range r.entries {
		if now.Sub(e.used) > r.opts.Expire {
			delete(r.entries, k)
			continue
		}
		if !e.inFlight {
			e.inFlight = true
			jobs = append(jobs, job{k, e.timeout})
		}
	}
	r.mu.Unlock()
	for _, j := range jobs {
		go r.fetch(j.k, j.timeout)
	}
}

// Len is the number of cached key sets (for metrics and tests).
func (r *Resolver) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}
