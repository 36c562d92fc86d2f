package kubeauth

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/xds"
)

// XDSOptions configure XDS.
type XDSOptions struct {
	// Client reads pods; Reviews verifies tokens (default: Client's
	// TokenReview API).
	Client  kubernetes.Interface
	Reviews TokenReviews
	// Namespace is the controller's: the node proxies' ServiceAccounts are
	// there.
	Namespace string
	// NodeProxyServiceAccounts are the ServiceAccounts whose pods are node
	// proxies (default api.NodeProxyServiceAccount).
	NodeProxyServiceAccounts []string
	// ClusterDomain is the last part of proxyless node IDs.
	ClusterDomain string
	// Concurrency bounds TokenReviews and pod lookups in flight; CacheSize
	// the verified tokens remembered (defaults DefaultConcurrency,
	// DefaultCacheSize).
	Concurrency, CacheSize int
}

// XDS authenticates xDS clients (xds.Authenticator).
type XDS struct {
	o        XDSOptions
	reviewer *reviewer
	// principals are the authorizations of verified tokens, until the
	// tokens expire: the pod a token is bound to keeps its node, UID and
	// addresses for its whole life, so what was checked stays true while
	// the pod exists, and a token outliving its pod expires within its
	// lifetime (an hour, the chart's expirationSeconds; the server's
	// MaxConnectionAge closes its streams). A reconnect costs nothing.
	principals *ttlCache[xds.Principal]
	flight     singleflight.Group
}

// NewXDS returns an authenticator; it makes no API call until a client
// connects.
func NewXDS(o XDSOptions) (*XDS, error) {
	if o.Client == nil || o.Namespace == "" || o.ClusterDomain == "" {
		return nil, fmt.Errorf("xDS authentication needs a client, the controller's namespace and the cluster domain")
	}
	if o.Reviews == nil {
		o.Reviews = o.Client.AuthenticationV1().TokenReviews()
	}
	if len(o.NodeProxyServiceAccounts) == 0 {
		o.NodeProxyServiceAccounts = []string{api.NodeProxyServiceAccount}
	}
	r := newReviewer(o.Reviews, o.Concurrency, o.CacheSize)
	return &XDS{o: o, reviewer: r, principals: newTTLCache[xds.Principal](r.cache.max)}, nil
}

// Authenticate implements xds.Authenticator.
func (a *XDS) Authenticate(ctx context.Context, token string) (xds.Principal, error) {
	key := keyOf(api.XDSAudience, token)
	if p, ok := a.principals.get(key, a.reviewer.now()); ok {
		return p, nil
	}
	id, err := a.reviewer.review(ctx, token, api.XDSAudience)
	if err != nil {
		return nil, err
	}
	return shared(ctx, &a.flight, key, func(ctx context.Context) (xds.Principal, error) {
		if p, ok := a.principals.get(key, a.reviewer.now()); ok {
			return p, nil
		}
		p, err := a.principal(ctx, id)
		if err != nil {
			return nil, err
		}
		a.principals.put(key, p, id.Expires, a.reviewer.now())
		return p, nil
	})
}

// principal checks the pod a token is bound to and says what it may be
// served.
func (a *XDS) principal(ctx context.Context, id *Identity) (xds.Principal, error) {
	if id.PodName == "" || id.PodUID == "" || id.Namespace == "" {
		return nil, xds.Refuse(codes.PermissionDenied, xds.ReasonNotPodBound,
			"%s: the token is not bound to a pod; use a projected ServiceAccount token (audience %q)", id, api.XDSAudience)
	}
	var pod *corev1.Pod
	err := a.reviewer.limited(ctx, func(ctx context.Context) error {
		var err error
		pod, err = a.o.Client.CoreV1().Pods(id.Namespace).Get(ctx, id.PodName, metav1.GetOptions{})
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
		return nil, xds.Refuse(codes.PermissionDenied, xds.ReasonPod, "%s: the pod the token is bound to does not exist", id)
	case err != nil:
		return nil, unavailable("get pod", err)
	case string(pod.UID) != id.PodUID:
		return nil, xds.Refuse(codes.PermissionDenied, xds.ReasonPod, "%s: the token is bound to an earlier pod of that name", id)
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return nil, xds.Refuse(codes.PermissionDenied, xds.ReasonPod, "%s: the pod has finished (%s)", id, pod.Status.Phase)
	case pod.Spec.ServiceAccountName != id.ServiceAccount:
		// The API server binds a pod's token to the pod's own account; a
		// mismatch is not a token kubelet mounted.
		return nil, xds.Refuse(codes.PermissionDenied, xds.ReasonPod, "%s: the pod runs as ServiceAccount %q", id, pod.Spec.ServiceAccountName)
	}
	if id.Namespace == a.o.Namespace && slices.Contains(a.o.NodeProxyServiceAccounts, id.ServiceAccount) {
		node := pod.Spec.NodeName
		if node == "" {
			return nil, xds.Refuse(codes.PermissionDenied, xds.ReasonPod, "%s: the pod is not scheduled on a node", id)
		}
		if id.NodeName != "" && id.NodeName != node {
			return nil, xds.Refuse(codes.PermissionDenied, xds.ReasonPod, "%s: the token names node %q, the pod runs on %q", id, id.NodeName, node)
		}
		return &nodeProxy{id: id, node: node}, nil
	}
	p := &proxyless{id: id, domain: a.o.ClusterDomain, nodeProxies: fmt.Sprintf("%s/%v", a.o.Namespace, a.o.NodeProxyServiceAccounts)}
	for _, ip := range pod.Status.PodIPs {
		if addr, err := netip.ParseAddr(ip.IP); err == nil {
			p.ips = append(p.ips, addr)
		}
	}
	return p, nil
}

// nodeProxy is a node proxy's pod: served as its node, as an Envoy.
type nodeProxy struct {
	id   *Identity
	node string
}

func (p *nodeProxy) AuthorizeNode(n *corev3.Node) error {
	if xds.KindOf(n) != xds.EnvoyNode {
		return xds.Refuse(codes.PermissionDenied, xds.ReasonWrongNode, "%s is a node proxy: it is served as an Envoy, not as a gRPC client", p.id)
	}
	if n.GetId() != p.node {
		return xds.Refuse(codes.PermissionDenied, xds.ReasonWrongNode, "%s runs on node %q: it is not served node %q", p.id, p.node, xds.NodeIDForMessage(n.GetId()))
	}
	return nil
}

func (p *nodeProxy) String() string { return p.id.String() }

// proxyless is any other pod: served only as a proxyless gRPC client under
// its own node ID.
type proxyless struct {
	id          *Identity
	domain      string
	ips         []netip.Addr
	nodeProxies string
}

func (p *proxyless) AuthorizeNode(n *corev3.Node) error {
	if xds.KindOf(n) != xds.GRPCNode {
		return xds.Refuse(codes.PermissionDenied, xds.ReasonNotNodeProxy,
			"%s is not a node proxy (ServiceAccounts %s): it may only be served as a proxyless gRPC client (node metadata GENERATOR=grpc)", p.id, p.nodeProxies)
	}
	want := ProxylessNodeID("<pod IP>", p.id.PodName, p.id.Namespace, p.domain)
	pid, err := parseProxylessID(n.GetId())
	if err != nil {
		return xds.Refuse(codes.PermissionDenied, xds.ReasonWrongNode, "%s: node ID %q: %v (want %s)", p.id, xds.NodeIDForMessage(n.GetId()), err, want)
	}
	if pid.pod != p.id.PodName || pid.namespace != p.id.Namespace || pid.domain != p.domain || !slices.Contains(p.ips, pid.ip) {
		return xds.Refuse(codes.PermissionDenied, xds.ReasonWrongNode, "%s may only be served as its own node ID %s with one of its IPs %v, not %q",
			p.id, want, p.ips, xds.NodeIDForMessage(n.GetId()))
	}
	return nil
}

func (p *proxyless) String() string { return p.id.String() }

var _ xds.Authenticator = (*XDS)(nil)
