package jwks

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const keySet = `{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}`

// keyServer serves a key set, an OpenID discovery document and the
// failure modes a hostile or broken server has.
type keyServer struct {
	*httptest.Server
	mu   sync.Mutex
	doc  string
	hits atomic.Int32
}

func newKeyServer(t *testing.T) *keyServer {
	t.Helper()
	ks := &keyServer{doc: keySet}
	mux := http.NewServeMux()
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		ks.hits.Add(1)
		ks.mu.Lock()
		defer ks.mu.Unlock()
		if ks.doc == "" {
			http.Error(w, "secret internal error page", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, ks.doc)
	})
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, ks.URL, ks.URL+"/jwks")
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/jwks", http.StatusFound)
	})
	mux.HandleFunc("/huge", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"keys":[`+strings.Repeat(" ", MaxDocument)+`]}`)
	})
	mux.HandleFunc("/html", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "<html>secret internal page</html>")
	})
	ks.Server = httptest.NewServer(mux)
	t.Cleanup(ks.Close)
	return ks
}

func (ks *keyServer) set(doc string) {
	ks.mu.Lock()
	ks.doc = doc
	ks.mu.Unlock()
}

// onLoopback lets the resolver reach the test's server (loopback is
// refused in production).
func onLoopback(netip.Addr) bool { return true }

func TestFetch(t *testing.T) {
	ks := newKeyServer(t)
	r := New(Options{AllowAddress: onLoopback})
	for name, c := range map[string]struct {
		issuer, uri string
		want        string // substring of the error; empty: keySet
		notInErr    string
	}{
		"jwksUri":                                   {uri: ks.URL + "/jwks"},
		"issuer only, through OpenID discovery":     {issuer: ks.URL},
		"a redirect is not followed":                {uri: ks.URL + "/redirect", want: "redirects are not followed"},
		"a document over the size limit":            {uri: ks.URL + "/huge", want: "larger than"},
		"not a key set; the body is not repeated":   {uri: ks.URL + "/html", want: "did not return a JSON Web Key Set", notInErr: "secret"},
		"an error status; the body is not repeated": {uri: ks.URL + "/missing", want: "404", notInErr: "page not found"},
		"not http":                 {uri: "file:///etc/passwd", want: "not an http(s) URL"},
		"credentials are not sent": {uri: "http://user:pw@" + strings.TrimPrefix(ks.URL, "http://") + "/jwks", want: "credentials", notInErr: "pw"},
		"the query is not logged":  {uri: ks.URL + "/missing?token=s3cret", want: "404", notInErr: "s3cret"},
	} {
		t.Run(name, func(t *testing.T) {
			doc, err := r.Fetch(context.Background(), c.issuer, c.uri)
			if c.want == "" {
				if err != nil || doc != keySet {
					t.Fatalf("Fetch = %q, %v; want the key set", doc, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Fetch error = %v; want one containing %q", err, c.want)
			}
			if c.notInErr != "" && strings.Contains(err.Error(), c.notInErr) {
				t.Errorf("error %q repeats %q", err, c.notInErr)
			}
		})
	}
}

// TestRefusedAddresses: with the production setting, a URI that names (or
// resolves to) the controller itself, the node's metadata service or any
// link-local address is refused when dialled.
func TestRefusedAddresses(t *testing.T) {
	ks := newKeyServer(t)
	r := New(Options{})
	port := ks.URL[strings.LastIndex(ks.URL, ":")+1:]
	for name, uri := range map[string]string{
		"loopback":                  ks.URL + "/jwks",
		"localhost by name":         "http://localhost:" + port + "/jwks",
		"cloud metadata service":    "http://169.254.169.254/latest/meta-data/",
		"unspecified":               "http://0.0.0.0:" + port + "/jwks",
		"IPv4-mapped IPv6 loopback": "http://[::ffff:127.0.0.1]:" + port + "/jwks",
		"IPv6 loopback":             "http://[::1]:" + port + "/jwks",
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := r.Fetch(ctx, "", uri)
			if err == nil || !strings.Contains(err.Error(), "refusing to connect") {
				t.Fatalf("Fetch(%s) = %v; want a refusal", uri, err)
			}
		})
	}
	if n := ks.hits.Load(); n != 0 {
		t.Errorf("the key server was reached %d times", n)
	}
	for _, a := range []string{"10.0.0.7", "192.168.1.1", "8.8.8.8", "2001:db8::1"} {
		if !SafeAddress(netip.MustParseAddr(a)) {
			t.Errorf("SafeAddress(%s) = false; in-cluster and public key servers must be reachable", a)
		}
	}
}

// TestLookup: the translator's view. A miss starts a fetch and answers
// ErrPending; OnChange announces the keys; a failed refresh keeps the last
// good keys; a changed document is announced again; unused entries expire.
func TestLookup(t *testing.T) {
	ks := newKeyServer(t)
	changed := make(chan struct{}, 16)
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := New(Options{AllowAddress: onLoopback, Now: clock, OnChange: func() { changed <- struct{}{} }})
	wait := func() {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(10 * time.Second):
			t.Fatal("OnChange was not called")
		}
	}
	uri := ks.URL + "/jwks"
	if _, err := r.Lookup("", uri, time.Second); err != ErrPending {
		t.Fatalf("first Lookup error = %v; want ErrPending", err)
	}
	wait()
	if doc, err := r.Lookup("", uri, time.Second); err != nil || doc != keySet {
		t.Fatalf("Lookup after the fetch = %q, %v", doc, err)
	}

	ks.set("") // the key server fails: the last good keys stay
	r.refresh()
	deadline := time.Now().Add(10 * time.Second)
	for ks.hits.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if doc, err := r.Lookup("", uri, time.Second); err != nil || doc != keySet {
		t.Fatalf("Lookup after a failed refresh = %q, %v; want the last good keys", doc, err)
	}

	rotated := strings.Replace(keySet, `"k1"`, `"k2"`, 1)
	ks.set(rotated)
	r.refresh()
	wait()
	if doc, _ := r.Lookup("", uri, time.Second); doc != rotated {
		t.Fatalf("Lookup after rotation = %q; want the new keys", doc)
	}

	// A key server that never worked: the error is answered (not pending
	// forever) and retried at the next refresh.
	if _, err := r.Lookup("", ks.URL+"/missing", time.Second); err != ErrPending {
		t.Fatalf("Lookup = %v; want ErrPending", err)
	}
	wait()
	if _, err := r.Lookup("", ks.URL+"/missing", time.Second); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Lookup of a failing key server = %v; want its error", err)
	}

	mu.Lock()
	now = now.Add(DefaultExpire + time.Minute)
	mu.Unlock()
	r.refresh()
	if n := r.Len(); n != 0 {
		t.Errorf("%d entries left after they expired", n)
	}
}
