// Package debugclient reads the controller's /debug/ endpoints as
// 'nodemesh proxy-config', 'nodemesh status' and 'nodemesh migrate' do:
// through the API server's service proxy (or directly at a URL), with a
// short-lived token of api.DebugServiceAccount requested with the
// TokenRequest API and sent in api.DebugTokenHeader — the API server's
// proxy consumes the caller's own Authorization header and forwards no
// identity, so the controller could not otherwise tell who asks.
//
// The caller needs create on serviceaccounts/token for that account (the
// chart's nodemesh-debug-client Role grants it, with get services/proxy).
package debugclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
)

// DefaultPort is the controller's monitoring port.
const DefaultPort = api.MonitoringPort

// TokenLifetime is how long a requested debug token lives (the API's
// minimum: a token is requested per command).
const TokenLifetime = 10 * time.Minute

// Client reads debug endpoints.
type Client struct {
	// URL is the controller's monitoring URL (e.g. after 'kubectl
	// port-forward'); empty: through the API server's service proxy.
	URL string
	// Kube requests tokens and reaches the service proxy.
	Kube kubernetes.Interface
	// Namespace and Service are the controller's (defaults nodemesh-system,
	// api.ControllerService); Port its monitoring port.
	Namespace, Service string
	Port               int
	// ServiceAccount is the account tokens are requested for (default
	// api.DebugServiceAccount, in Namespace).
	ServiceAccount string
	// Token, when set, is sent instead of requesting one.
	Token string
	// HTTP is the client for URL (default http.DefaultClient).
	HTTP *http.Client

	mu      sync.Mutex
	token   string
	expires time.Time
}

// StatusError is the controller's (or the proxy's) answer other than 200.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%d %s", e.Code, http.StatusText(e.Code))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	switch e.Code {
	case http.StatusUnauthorized:
		msg += " (the controller did not accept the debug token)"
	case http.StatusForbidden:
		msg += " (the token's ServiceAccount needs get services/proxy on the controller's Service)"
	}
	return msg
}

// ErrToken wraps a failure to obtain a debug token.
var ErrToken = errors.New("debug token")

func (c *Client) defaults() (ns, svc, sa string, port int) {
	ns, svc, sa, port = c.Namespace, c.Service, c.ServiceAccount, c.Port
	if ns == "" {
		ns = api.DefaultNamespace
	}
	if svc == "" {
		svc = api.ControllerService
	}
	if sa == "" {
		sa = api.DebugServiceAccount
	}
	if port == 0 {
		port = DefaultPort
	}
	return
}

// debugToken returns Token, or a token of the debug account (requested
// once per Client, reused while it has a minute left).
func (c *Client) debugToken(ctx context.Context) (string, error) {
	if c.Token != "" {
		return c.Token, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Until(c.expires) > time.Minute {
		return c.token, nil
	}
	if c.Kube == nil {
		return "", fmt.Errorf("%w: no cluster access to request one (give --token)", ErrToken)
	}
	ns, _, sa, _ := c.defaults()
	secs := int64(TokenLifetime / time.Second)
	tr, err := c.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{api.DebugAudience}, ExpirationSeconds: &secs,
	}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("%w for ServiceAccount %s/%s: %v (reading the controller's debug endpoints takes create on serviceaccounts/token for it: bind Role nodemesh-debug-client in %s, or give --token)",
			ErrToken, ns, sa, err, ns)
	}
	c.token, c.expires = tr.Status.Token, tr.Status.ExpirationTimestamp.Time
	return c.token, nil
}

// Get reads path (e.g. "debug/config_dump") with query.
func (c *Client) Get(ctx context.Context, path string, query url.Values) ([]byte, error) {
	tok, err := c.debugToken(ctx)
	if err != nil {
		return nil, err
	}
	path = strings.TrimLeft(path, "/")
	if c.URL != "" {
		u := strings.TrimRight(c.URL, "/") + "/" + path
		if len(query) > 0 {
			u += "?" + query.Encode()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		// Directly, the standard header; through a proxy that forwards
		// Authorization, the same token.
		req.Header.Set("Authorization", "Bearer "+tok)
		hc := c.HTTP
		if hc == nil {
			hc = http.DefaultClient
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, &StatusError{Code: resp.StatusCode, Message: strings.TrimSpace(string(body))}
		}
		return body, nil
	}
	ns, svc, _, port := c.defaults()
	req := c.Kube.CoreV1().RESTClient().Get().Namespace(ns).Resource("services").
		Name(fmt.Sprintf("http:%s:%d", svc, port)).SubResource("proxy").Suffix(path).
		SetHeader(api.DebugTokenHeader, tok)
	for k, vs := range query {
		for _, v := range vs {
			req = req.Param(k, v)
		}
	}
	body, err := req.DoRaw(ctx)
	if err != nil {
		var code int32
		var st apierrors.APIStatus
		if errors.As(err, &st) {
			code = st.Status().Code
		}
		msg := strings.TrimSpace(string(body))
		// A JSON Status is the API server's own answer (the caller may not
		// use the proxy, or the Service has no endpoint): its error says so.
		if code == 0 || msg == "" || len(msg) > 512 || strings.HasPrefix(msg, "{") {
			return nil, err
		}
		return nil, &StatusError{Code: int(code), Message: msg}
	}
	return body, nil
}
