package testapp

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// bookinfo starts the bookinfo-like app on loopback: productpage → details,
// productpage → reviews → ratings. ratingsHandler replaces ratings when set.
func bookinfo(t *testing.T, ratingsHandler http.Handler) (productpage string) {
	t.Helper()
	start := func(h http.Handler) string {
		s := httptest.NewServer(h)
		t.Cleanup(s.Close)
		return s.URL + "/"
	}
	if ratingsHandler == nil {
		ratingsHandler = ChainHandler(ChainConfig{Name: "ratings", Version: "v1", Pod: "ratings-1", Timeout: 5 * time.Second})
	}
	ratings := start(ratingsHandler)
	details := start(ChainHandler(ChainConfig{Name: "details", Version: "v1", Pod: "details-1", Timeout: 5 * time.Second}))
	reviews := start(ChainHandler(ChainConfig{Name: "reviews", Version: "v2", Pod: "reviews-v2-1", Upstreams: []string{ratings}, Timeout: 5 * time.Second}))
	return start(ChainHandler(ChainConfig{Name: "productpage", Version: "v1", Pod: "productpage-1", Upstreams: []string{details, reviews}, Timeout: 5 * time.Second}))
}

func get(t *testing.T, url string, header http.Header) (int, ChainResponse, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var cr ChainResponse
	_ = json.Unmarshal(b, &cr)
	return resp.StatusCode, cr, string(b)
}

// TestChain: the whole chain answers with every service's name and version,
// nested as the calls went.
func TestChain(t *testing.T) {
	code, pp, body := get(t, bookinfo(t, nil), http.Header{})
	if code != 200 {
		t.Fatalf("productpage: %d\n%s", code, body)
	}
	if pp.Service != "productpage" || pp.Version != "v1" || pp.Pod != "productpage-1" || len(pp.Upstreams) != 2 {
		t.Fatalf("productpage answered %+v", pp)
	}
	details, reviews := pp.Upstreams[0].Response, pp.Upstreams[1].Response
	if details == nil || details.Service != "details" || pp.Upstreams[0].Status != 200 {
		t.Errorf("details: %+v", pp.Upstreams[0])
	}
	if reviews == nil || reviews.Service != "reviews" || reviews.Version != "v2" || len(reviews.Upstreams) != 1 {
		t.Fatalf("reviews: %+v", pp.Upstreams[1])
	}
	if r := reviews.Upstreams[0].Response; r == nil || r.Service != "ratings" || r.Version != "v1" {
		t.Errorf("ratings (through reviews): %+v", reviews.Upstreams[0])
	}
}

// TestChainFailures: an upstream that fails makes every service above it
// answer 502 and say which; headers bookinfo routes on reach the last hop;
// upstreams configured in a loop end.
func TestChainFailures(t *testing.T) {
	t.Run("an upstream down", func(t *testing.T) {
		down := httptest.NewServer(http.NotFoundHandler())
		url := down.URL + "/"
		down.Close()
		pp := httptest.NewServer(ChainHandler(ChainConfig{Name: "productpage", Version: "v1", Upstreams: []string{url}, Timeout: 5 * time.Second}))
		defer pp.Close()
		code, cr, body := get(t, pp.URL, http.Header{})
		if code != http.StatusBadGateway || len(cr.Upstreams) != 1 || cr.Upstreams[0].Error == "" || cr.Version != "v1" {
			t.Errorf("got %d: %s", code, body)
		}
	})
	t.Run("an upstream's error status", func(t *testing.T) {
		ratings := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "out of stars", http.StatusServiceUnavailable)
		})
		code, pp, body := get(t, bookinfo(t, ratings), http.Header{})
		if code != http.StatusBadGateway || pp.Upstreams[1].Status != http.StatusBadGateway ||
			pp.Upstreams[1].Response.Upstreams[0].Status != 503 || pp.Upstreams[1].Response.Upstreams[0].Body != "out of stars" {
			t.Errorf("got %d: %s", code, body)
		}
	})
	t.Run("headers propagated", func(t *testing.T) {
		var got http.Header
		ratings := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() })
		code, _, body := get(t, bookinfo(t, ratings), http.Header{"End-User": {"jason"}, "X-Nodemesh-Check": {"v2"}, "Cookie": {"secret"}})
		if code != 200 {
			t.Fatalf("got %d: %s", code, body)
		}
		if got.Get("End-User") != "jason" || got.Get("X-Nodemesh-Check") != "v2" || got.Get(HopsHeader) != "2" {
			t.Errorf("ratings got %v", got)
		}
		if got.Get("Cookie") != "" {
			t.Errorf("ratings got the client's cookie: only the listed headers are passed on")
		}
	})
	t.Run("a loop ends", func(t *testing.T) {
		var self string
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ChainHandler(ChainConfig{Name: "loop", Version: "v1", Upstreams: []string{self}, Timeout: 5 * time.Second}).ServeHTTP(w, r)
		}))
		defer s.Close()
		self = s.URL + "/"
		code, _, body := get(t, self, http.Header{})
		if code != http.StatusBadGateway || !strings.Contains(body, "form a loop") {
			t.Errorf("got %d: %s", code, body)
		}
	})
	t.Run("healthz calls no upstream", func(t *testing.T) {
		called := false
		up := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
		defer up.Close()
		s := httptest.NewServer(ChainHandler(ChainConfig{Name: "p", Upstreams: []string{up.URL + "/"}, Timeout: 5 * time.Second}))
		defer s.Close()
		resp, err := http.Get(s.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || called {
			t.Errorf("healthz: %d, upstream called %v", resp.StatusCode, called)
		}
	})
}
