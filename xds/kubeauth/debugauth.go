package kubeauth

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/xds"
)

// DebugOptions configure Debug.
type DebugOptions struct {
	Client  kubernetes.Interface
	Reviews TokenReviews // default: Client's TokenReview API
	// Namespace and Service are the controller's: a caller must be allowed
	// to get services/proxy on that Service.
	Namespace, Service string
	Concurrency        int
	CacheSize          int
}

// Debug authorizes requests to the controller's /debug/ endpoints
// (xds.DebugAuthorizer): a token of audience api.DebugAudience — in
// the api.DebugTokenHeader header, which survives the API server's
// service proxy, or as "Authorization: Bearer" — whose user may get
// services/proxy on the controller's Service, asked with a
// SubjectAccessReview. That is whoever could reach the endpoints through
// the API server's proxy (which strips the caller's identity, so the
// caller brings a token of its own): 'nodemesh proxy-config' requests one
// for api.DebugServiceAccount, which the chart allows exactly that.
type Debug struct {
	o        DebugOptions
	reviewer *reviewer
	// decisions are SubjectAccessReview answers by token, briefly: an RBAC
	// change applies within allowedTTL (as the API server's webhook
	// authorizer caches, shorter).
	decisions *ttlCache[bool]
	flight    singleflight.Group
}

const (
	allowedTTL = time.Minute
	deniedTTL  = 10 * time.Second
)

// NewDebug returns a debug authorizer.
func NewDebug(o DebugOptions) (*Debug, error) {
	if o.Client == nil || o.Namespace == "" || o.Service == "" {
		return nil, fmt.Errorf("debug authorization needs a client and the controller's namespace and Service")
	}
	if o.Reviews == nil {
		o.Reviews = o.Client.AuthenticationV1().TokenReviews()
	}
	r := newReviewer(o.Reviews, o.Concurrency, o.CacheSize)
	return &Debug{o: o, reviewer: r, decisions: newTTLCache[bool](r.cache.max)}, nil
}

// DebugToken is the debug token of a request: api.DebugTokenHeader,
// else the Authorization header's bearer token.
func DebugToken(r *http.Request) (string, error) {
	if v := r.Header.Values(api.DebugTokenHeader); len(v) > 0 {
		if len(v) > 1 || strings.TrimSpace(v[0]) == "" {
			return "", xds.Refuse(codes.Unauthenticated, xds.ReasonBadToken, "one %s header with a token, please", api.DebugTokenHeader)
		}
		return strings.TrimSpace(v[0]), nil
	}
	tok, err := xds.BearerToken(r.Header.Values("Authorization"))
	if err != nil {
		if ref, ok := err.(*xds.Refusal); ok && ref.Reason == xds.ReasonNoToken {
			return "", xds.Refuse(codes.Unauthenticated, xds.ReasonNoToken,
				"no credentials: send a token of audience %q in the %s header (through the API server's service proxy) or as \"Authorization: Bearer\"; 'nodemesh proxy-config' does",
				api.DebugAudience, api.DebugTokenHeader)
		}
		return "", err
	}
	return tok, nil
}

// AuthorizeDebug implements xds.DebugAuthorizer.
func (d *Debug) AuthorizeDebug(r *http.Request) (string, error) {
	tok, err := DebugToken(r)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(r.Context(), xds.AuthTimeout)
	defer cancel()
	id, err := d.reviewer.review(ctx, tok, api.DebugAudience)
	if err != nil {
		return "", err
	}
	key := keyOf("sar", tok)
	allowed, ok := d.decisions.get(key, d.reviewer.now())
	if !ok {
		allowed, err = shared(ctx, &d.flight, key, func(ctx context.Context) (bool, error) {
			return d.access(ctx, id)
		})
		if err != nil {
			return id.String(), err
		}
		ttl := deniedTTL
		if allowed {
			ttl = allowedTTL
		}
		exp := d.reviewer.now().Add(ttl)
		if exp.After(id.Expires) {
			exp = id.Expires
		}
		d.decisions.put(key, allowed, exp, d.reviewer.now())
	}
	if !allowed {
		return id.String(), xds.Refuse(codes.PermissionDenied, xds.ReasonForbidden,
			"%s may not read the debug endpoints: it needs get services/proxy on service %s in namespace %s", id, d.o.Service, d.o.Namespace)
	}
	return id.String(), nil
}

// access asks the API server whether the token's user may get
// services/proxy on the controller's Service.
func (d *Debug) access(ctx context.Context, id *Identity) (bool, error) {
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range id.User.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: id.User.Username, UID: id.User.UID, Groups: id.User.Groups, Extra: extra,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: d.o.Namespace, Verb: "get", Resource: "services", Subresource: "proxy", Name: d.o.Service,
		},
	}}
	var res *authorizationv1.SubjectAccessReview
	err := d.reviewer.limited(ctx, func(ctx context.Context) error {
		var err error
		res, err = d.o.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return false, unavailable("SubjectAccessReview", err)
	}
	return res.Status.Allowed && !res.Status.Denied, nil
}

var _ xds.DebugAuthorizer = (*Debug)(nil)
