package kubeauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/xds"
)

// jwt makes an unsigned token with these claims (the reviewer never checks
// signatures itself; the fake API below decides).
func jwt(claims map[string]any) string {
	c, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256"}`)) + "." + enc.EncodeToString(c) + ".c2ln"
}

func TestReadClaims(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	exp := now.Add(time.Hour).Unix()
	for name, tc := range map[string]struct {
		token string
		err   string // "" accepted
	}{
		"audience string":    {jwt(map[string]any{"aud": "nodemesh-xds", "exp": exp}), ""},
		"audience list":      {jwt(map[string]any{"aud": []string{"x", "nodemesh-xds"}, "exp": exp}), ""},
		"other audience":     {jwt(map[string]any{"aud": []string{"https://kubernetes.default.svc"}, "exp": exp}), `its audience is ["https://kubernetes.default.svc"], not "nodemesh-xds"`},
		"no audience":        {jwt(map[string]any{"exp": exp}), "aud is neither"},
		"no expiry (legacy)": {jwt(map[string]any{"aud": "nodemesh-xds"}), "no expiry"},
		"expired":            {jwt(map[string]any{"aud": "nodemesh-xds", "exp": now.Unix()}), "expired at"},
		"exp not a number":   {jwt(map[string]any{"aud": "nodemesh-xds", "exp": "soon"}), "not JSON"},
		"two parts":          {"a.b", "not a JWT"},
		"claims not base64":  {"a.!!!.c", "not base64url"},
		"claims not JSON":    {"a." + base64.RawURLEncoding.EncodeToString([]byte("{")) + ".c", "not JSON"},
		"huge":               {strings.Repeat("a", maxTokenBytes+1), "longer than"},
		"many audiences":     {jwt(map[string]any{"aud": []string{"a", "b", "c", "d", "e", "f"}, "exp": exp}), `["a" "b" "c" "d" …]`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := readClaims(tc.token, "nodemesh-xds", now)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("got %v, want an error with %q", err, tc.err)
			case err != nil:
				var r *xds.Refusal
				if !errors.As(err, &r) || r.Code != codes.Unauthenticated || r.Reason != xds.ReasonBadToken {
					t.Errorf("not an Unauthenticated bad-token refusal: %#v", err)
				}
			}
		})
	}
}

// fakeReviews is the TokenReview API answering from a table.
type fakeReviews struct {
	n       atomic.Int32
	answers map[string]authenticationv1.TokenReviewStatus
	err     error
	block   chan struct{}
}

func (f *fakeReviews) Create(ctx context.Context, tr *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	f.n.Add(1)
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.err != nil {
		return nil, f.err
	}
	return &authenticationv1.TokenReview{Status: f.answers[tr.Spec.Token]}, nil
}

// TestReviewerCachesUntilExpiry: a verified token is reviewed once and
// remembered until its exp, then reviewed again; refusals and API errors
// are not remembered; the cache holds at most its size.
func TestReviewerCachesUntilExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ok := authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"nodemesh-xds"}, User: authenticationv1.UserInfo{Username: "system:serviceaccount:ns:sa"}}
	good := jwt(map[string]any{"aud": "nodemesh-xds", "exp": now.Add(time.Hour).Unix(), "n": 1})
	rejected := jwt(map[string]any{"aud": "nodemesh-xds", "exp": now.Add(time.Hour).Unix(), "n": 2})
	wrongAud := jwt(map[string]any{"aud": "nodemesh-xds", "exp": now.Add(time.Hour).Unix(), "n": 3})
	f := &fakeReviews{answers: map[string]authenticationv1.TokenReviewStatus{
		good:     ok,
		rejected: {Authenticated: false, Error: "invalid bearer token"},
		wrongAud: {Authenticated: true, Audiences: []string{"other"}},
	}}
	r := newReviewer(f, 2, 3)
	r.now = func() time.Time { return now }
	ctx := context.Background()
	for range 3 {
		id, err := r.review(ctx, good, "nodemesh-xds")
		if err != nil || id.Namespace != "ns" || id.ServiceAccount != "sa" {
			t.Fatalf("good token: %+v, %v", id, err)
		}
	}
	if n := f.n.Load(); n != 1 {
		t.Errorf("3 reviews of one token: %d TokenReviews, want 1", n)
	}
	for name, tok := range map[string]string{"rejected": rejected, "audience not confirmed": wrongAud} {
		for range 2 {
			if _, err := r.review(ctx, tok, "nodemesh-xds"); status(err) != codes.Unauthenticated {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	if n := f.n.Load(); n != 5 {
		t.Errorf("refused tokens are reviewed each time: %d TokenReviews, want 5", n)
	}
	// Expiry: a minute before, cached; at exp, refused before any review.
	now = now.Add(59 * time.Minute)
	if _, err := r.review(ctx, good, "nodemesh-xds"); err != nil || f.n.Load() != 5 {
		t.Errorf("a minute before expiry: %v, %d reviews", err, f.n.Load())
	}
	now = now.Add(time.Minute)
	if _, err := r.review(ctx, good, "nodemesh-xds"); status(err) != codes.Unauthenticated || f.n.Load() != 5 {
		t.Errorf("at expiry: %v, %d reviews", err, f.n.Load())
	}
	// The same token for another audience is its own entry.
	if _, err := r.review(ctx, good, "nodemesh-debug"); status(err) != codes.Unauthenticated {
		t.Errorf("token of audience nodemesh-xds for nodemesh-debug: %v", err)
	}
	// API errors: Unavailable (retry), not cached.
	f.err = errors.New("connection refused")
	other := jwt(map[string]any{"aud": "nodemesh-xds", "exp": now.Add(time.Hour).Unix(), "n": 4})
	for range 2 {
		if _, err := r.review(ctx, other, "nodemesh-xds"); status(err) != codes.Unavailable {
			t.Errorf("API down: %v", err)
		}
	}
	if n := f.n.Load(); n != 7 {
		t.Errorf("API errors are not cached: %d reviews, want 7", n)
	}
}

// TestReviewerBounded: concurrent reviews wait for one of the slots and
// give up at the caller's deadline with Unavailable, never piling up on
// the API server; the cache never holds more than its size.
func TestReviewerBounded(t *testing.T) {
	now := time.Now()
	f := &fakeReviews{answers: map[string]authenticationv1.TokenReviewStatus{}, block: make(chan struct{})}
	r := newReviewer(f, 2, 3)
	var toks []string
	for i := range 6 {
		tok := jwt(map[string]any{"aud": "nodemesh-xds", "exp": now.Add(time.Duration(i+1) * time.Hour).Unix(), "n": i})
		toks = append(toks, tok)
		f.answers[tok] = authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"nodemesh-xds"}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	errs := make(chan error, 4)
	for i := range 4 {
		go func() { _, err := r.review(ctx, toks[i], "nodemesh-xds"); errs <- err }()
	}
	for range 4 {
		if err := <-errs; status(err) != codes.Unavailable {
			t.Errorf("blocked review: %v, want Unavailable", err)
		}
	}
	if n := f.n.Load(); n > 2 {
		t.Errorf("%d TokenReviews in flight at once, want at most 2", n)
	}
	close(f.block)
	for _, tok := range toks {
		if _, err := r.review(context.Background(), tok, "nodemesh-xds"); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.cache.len(); n != 3 {
		t.Errorf("cache holds %d tokens, want its size 3", n)
	}
	// The ones kept are those expiring last.
	for i, tok := range toks {
		_, kept := r.cache.get(keyOf("nodemesh-xds", tok), now)
		if kept != (i >= 3) {
			t.Errorf("token %d (expiring in %dh) kept: %v", i, i+1, kept)
		}
	}
}

func status(err error) codes.Code {
	var r *xds.Refusal
	if errors.As(err, &r) {
		return r.Code
	}
	return codes.Code(999)
}

func TestParseProxylessID(t *testing.T) {
	id := ProxylessNodeID("10.1.2.3", "web-7f9.x", "shop", "cluster.local")
	p, err := parseProxylessID(id)
	if err != nil || p.pod != "web-7f9.x" || p.namespace != "shop" || p.domain != "cluster.local" || p.ip.String() != "10.1.2.3" {
		t.Fatalf("%s: %+v, %v", id, p, err)
	}
	for _, bad := range []string{"node-1", "sidecar~10.1.2.3~web.shop", "router~10.1.2.3~web.shop~shop.svc.cluster.local", "sidecar~nope~web.shop~shop.svc.cluster.local",
		"sidecar~10.1.2.3~web~shop.svc.cluster.local", "sidecar~10.1.2.3~web.shop~other.svc.cluster.local"} {
		if _, err := parseProxylessID(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
