package kubeauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/xds"
)

// TokenReviews is the TokenReview API; client-go's
// AuthenticationV1().TokenReviews() is one.
type TokenReviews interface {
	Create(ctx context.Context, review *authenticationv1.TokenReview, opts metav1.CreateOptions) (*authenticationv1.TokenReview, error)
}

// The user extra the API server gives a token bound to a pod (and to the
// pod's node, since Kubernetes 1.30): k8s.io/apiserver's serviceaccount
// package names them.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
	saPrefix      = "system:serviceaccount:"
)

// Identity is who a verified token belongs to.
type Identity struct {
	User authenticationv1.UserInfo
	// Namespace and ServiceAccount are the token's ServiceAccount (empty
	// for a token of another kind of user).
	Namespace, ServiceAccount string
	// PodName and PodUID are the pod the token is bound to, NodeName that
	// pod's node when the token records it (all empty for a token not bound
	// to a pod).
	PodName, PodUID, NodeName string
	// Expires is the token's expiry.
	Expires time.Time
}

func (id *Identity) String() string {
	if id.PodName != "" {
		return fmt.Sprintf("pod %s/%s (ServiceAccount %s)", id.Namespace, id.PodName, id.ServiceAccount)
	}
	return id.User.Username
}

// Limits of the reviewer: how many TokenReviews (and pod lookups,
// SubjectAccessReviews) run at once, how long one may take, and how many
// verified tokens are remembered.
const (
	DefaultConcurrency = 8
	DefaultCacheSize   = 10000
	reviewTimeout      = 5 * time.Second
)

// reviewer verifies tokens with the TokenReview API, a few at a time,
// once per token and audience until the token expires.
type reviewer struct {
	reviews TokenReviews
	sem     *semaphore.Weighted
	cache   *ttlCache[*Identity]
	flight  singleflight.Group
	now     func() time.Time
}

func newReviewer(reviews TokenReviews, concurrency, cacheSize int) *reviewer {
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	if cacheSize <= 0 {
		cacheSize = DefaultCacheSize
	}
	return &reviewer{reviews: reviews, sem: semaphore.NewWeighted(int64(concurrency)), cache: newTTLCache[*Identity](cacheSize), now: time.Now}
}

// review returns the identity of a token of audience: from the cache, or
// from a TokenReview that concurrent streams with the same token share.
func (r *reviewer) review(ctx context.Context, token, audience string) (*Identity, error) {
	now := r.now()
	cl, err := readClaims(token, audience, now)
	if err != nil {
		return nil, err
	}
	key := keyOf(audience, token)
	if id, ok := r.cache.get(key, now); ok {
		return id, nil
	}
	return shared(ctx, &r.flight, key, func(ctx context.Context) (*Identity, error) {
		if id, ok := r.cache.get(key, r.now()); ok {
			return id, nil
		}
		id, err := r.create(ctx, token, audience, cl)
		if err != nil {
			return nil, err
		}
		r.cache.put(key, id, id.Expires, r.now())
		return id, nil
	})
}

func (r *reviewer) create(ctx context.Context, token, audience string, cl *claims) (*Identity, error) {
	var tr *authenticationv1.TokenReview
	err := r.limited(ctx, func(ctx context.Context) error {
		var err error
		tr, err = r.reviews.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{audience}}}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return nil, unavailable("TokenReview", err)
	}
	st := tr.Status
	if !st.Authenticated || st.Error != "" {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return nil, xds.Refuse(codes.Unauthenticated, xds.ReasonRejected, "the API server rejects the token: %s", msg)
	}
	// With spec.audiences set, status.audiences is what the token is valid
	// for among them.
	if !slices.Contains(st.Audiences, audience) {
		return nil, xds.Refuse(codes.Unauthenticated, xds.ReasonRejected, "the API server does not accept the token for audience %q", audience)
	}
	id := &Identity{User: st.User, Expires: cl.Exp}
	if rest, ok := strings.CutPrefix(st.User.Username, saPrefix); ok {
		id.Namespace, id.ServiceAccount, _ = strings.Cut(rest, ":")
	}
	one := func(k string) string {
		if v := st.User.Extra[k]; len(v) == 1 {
			return v[0]
		}
		return ""
	}
	id.PodName, id.PodUID, id.NodeName = one(extraPodName), one(extraPodUID), one(extraNodeName)
	return id, nil
}

// limited runs f when one of the concurrency slots is free, within the
// context's deadline and reviewTimeout.
func (r *reviewer) limited(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	if err := r.sem.Acquire(ctx, 1); err != nil {
		return fmt.Errorf("too many clients being authenticated at once: %w", err)
	}
	defer r.sem.Release(1)
	return f(ctx)
}

// unavailable is a check that could not be made: the client retries.
func unavailable(what string, err error) error {
	var ref *xds.Refusal
	if errors.As(err, &ref) {
		return ref
	}
	return xds.Refuse(codes.Unavailable, xds.ReasonUnavailable, "cannot verify the token now (%s: %v); retry", what, err)
}

// shared runs f once for concurrent callers with the same key; each caller
// waits within its own context, and f runs on a context of its own (one
// caller giving up does not fail the others).
func shared[V any](ctx context.Context, g *singleflight.Group, key tokenKey, f func(context.Context) (V, error)) (V, error) {
	k := fmt.Sprintf("%s/%x", key.purpose, key.digest)
	ch := g.DoChan(k, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*reviewTimeout)
		defer cancel()
		return f(fctx)
	})
	var zero V
	select {
	case res := <-ch:
		if res.Err != nil {
			return zero, res.Err
		}
		return res.Val.(V), nil
	case <-ctx.Done():
		return zero, xds.Refuse(codes.Unavailable, xds.ReasonUnavailable, "authentication took too long; retry")
	}
}
