package testapp

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultChainPort is bookinfo's port.
const DefaultChainPort = 9080

// Headers a chain service passes on to its upstreams: tracing (as bookinfo
// propagates it), Istio's end-user of bookinfo's routing example, and the
// check's own, so that header-matched routes work at every hop.
var propagated = []string{"x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid",
	"x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3", "end-user", "x-nodemesh-check"}

// HopsHeader counts the chain services a request went through; a request
// past maxHops is refused, so that upstreams configured in a loop end.
const (
	HopsHeader = "X-Nodemesh-Hops"
	maxHops    = 10
	// maxBody bounds what is read of an upstream's answer.
	maxBody = 64 << 10
)

// ChainConfig is one service of the bookinfo-like app.
type ChainConfig struct {
	// Name and Version are in every answer ("reviews", "v2").
	Name, Version string
	// Pod is the pod's name (the host name).
	Pod string
	// Upstreams are called in order for every request.
	Upstreams []string
	// Client calls the upstreams (http.DefaultClient with Timeout when nil).
	Client  *http.Client
	Timeout time.Duration
}

// ChainResponse is a chain service's answer (JSON).
type ChainResponse struct {
	Service   string           `json:"service"`
	Version   string           `json:"version"`
	Pod       string           `json:"pod"`
	Upstreams []UpstreamResult `json:"upstreams,omitempty"`
}

// UpstreamResult is one upstream's answer: its status and body (its own
// ChainResponse when it is a chain service), or why there was none.
type UpstreamResult struct {
	URL      string         `json:"url"`
	Status   int            `json:"status,omitempty"`
	Response *ChainResponse `json:"response,omitempty"`
	Body     string         `json:"body,omitempty"`
	Error    string         `json:"error,omitempty"`
}

type upstreamFlag []string

func (u *upstreamFlag) String() string { return strings.Join(*u, ",") }
func (u *upstreamFlag) Set(s string) error {
	p, err := url.Parse(s)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("%q: want an http:// or https:// URL", s)
	}
	*u = append(*u, s)
	return nil
}

func runChain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chain", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: nodemesh-testapp chain --name=NAME --version=VERSION [--port=9080] [--upstream=URL]...

One service of a bookinfo-like app. Every request (but /healthz) calls each
--upstream URL in order, passing on tracing, end-user and x-nodemesh-check
headers, and answers JSON: {"service", "version", "pod", "upstreams": [{"url",
"status", "response" (an upstream chain service's answer) or "body", "error"}]},
with status 200 when every upstream answered 2xx and 502 otherwise.

  productpage: --name=productpage --upstream=http://details:9080/ --upstream=http://reviews:9080/
  reviews:     --name=reviews --version=v2 --upstream=http://ratings:9080/
  details, ratings: no upstream

Flags:
`)
		fs.PrintDefaults()
	}
	var ups upstreamFlag
	name := fs.String("name", "", "the service's name, in every answer (required)")
	version := fs.String("version", "v1", "the service's version, in every answer")
	port := fs.Int("port", DefaultChainPort, "HTTP port")
	timeout := fs.Duration("upstream-timeout", 5*time.Second, "how long each upstream call may take")
	fs.Var(&ups, "upstream", "URL to call for every request (may be repeated)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	switch {
	case *name == "":
		return usageError{fmt.Errorf("--name is required")}
	case *port < 1 || *port > 65535:
		return usageError{fmt.Errorf("--port %d: not a port", *port)}
	case *timeout <= 0:
		return usageError{fmt.Errorf("--upstream-timeout %s: must be positive", *timeout)}
	}
	host, err := hostname()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "nodemesh-testapp %s: %s %s on :%d, upstreams %v\n", Version, *name, *version, *port, []string(ups))
	return serveHTTP(ctx, ":"+strconv.Itoa(*port), ChainHandler(ChainConfig{
		Name: *name, Version: *version, Pod: host, Upstreams: ups, Timeout: *timeout}))
}

// ChainHandler serves one chain service.
func ChainHandler(c ChainConfig) http.Handler {
	client := c.Client
	if client == nil {
		client = &http.Client{Timeout: c.Timeout}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Ready without the upstreams: a service is up when it serves, as
		// bookinfo's are; the answers say when an upstream is not.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		hops, _ := strconv.Atoi(r.Header.Get(HopsHeader))
		if hops >= maxHops {
			http.Error(w, fmt.Sprintf("%s %s: %d hops: the upstreams form a loop", c.Name, c.Version, hops), http.StatusLoopDetected)
			return
		}
		resp := ChainResponse{Service: c.Name, Version: c.Version, Pod: c.Pod}
		code := http.StatusOK
		for _, u := range c.Upstreams {
			res := callUpstream(r.Context(), client, u, r.Header, hops+1)
			if res.Status < 200 || res.Status > 299 {
				code = http.StatusBadGateway
			}
			resp.Upstreams = append(resp.Upstreams, res)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Nodemesh-Testapp", c.Name+"/"+c.Version)
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(resp)
	})
	return mux
}

func callUpstream(ctx context.Context, client *http.Client, u string, in http.Header, hops int) UpstreamResult {
	res := UpstreamResult{URL: u}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	for _, h := range propagated {
		if v := in.Values(h); len(v) > 0 {
			req.Header[http.CanonicalHeaderKey(h)] = v
		}
	}
	req.Header.Set(HopsHeader, strconv.Itoa(hops))
	r, err := client.Do(req)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer r.Body.Close()
	res.Status = r.StatusCode
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		res.Error = "read the answer: " + err.Error()
		return res
	}
	var cr ChainResponse
	if json.Unmarshal(body, &cr) == nil && cr.Service != "" {
		res.Response = &cr
	} else {
		res.Body = string(bytes.TrimSpace(body))
	}
	return res
}
