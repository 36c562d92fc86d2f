// Package watch is the controller's watch → translate → push loop: informers
// on the cluster fill a translate.Bag — the same input `nodemesh translate`
// reads from files — that xds.Generation translates through the translator's
// facade, and every node gets its snapshot through xds.Cache. It imports the
// translator only through translate and translate/ir.
package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/jwks"
)

// Defaults of Options.
const (
	DefaultDebounce      = 100 * time.Millisecond
	DefaultMaxDebounce   = time.Second
	DefaultProbeInterval = 5 * time.Second
)

// Options configure a Controller.
type Options struct {
	// Debounce is how long the cluster must be quiet after a change before
	// configuration is recomputed; MaxDebounce bounds the wait while changes
	// keep coming.
	Debounce, MaxDebounce time.Duration
	// ProbeInterval is how often the API server's readiness is checked.
	ProbeInterval time.Duration
	Istio         translate.IstioOptions
	// Authz are the options of the AuthorizationPolicy translation behind
	// the policies' status Events (default: Istio's root namespace).
	Authz translate.AuthzOptions
	// AuthzDiscoveryPeriod is how often the API server is asked whether it
	// serves AuthorizationPolicies, while it does not.
	AuthzDiscoveryPeriod time.Duration
	// JWKS configures the resolver of RequestAuthentication key sets
	// (zero: production — loopback, link-local and metadata addresses
	// refused; tests on loopback replace AllowAddress). OnChange is the
	// controller's own.
	JWKS    jwks.Options
	Logger  *slog.Logger
	Metrics *xds.Metrics
}

func (o Options) withDefaults() Options {
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	if o.MaxDebounce < o.Debounce {
		o.MaxDebounce = max(DefaultMaxDebounce, o.Debounce)
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.Authz.RootNamespace == "" {
		o.Authz.RootNamespace = o.Istio.RootNamespace
	}
	// One trust domain for both: the principals of AuthorizationPolicies
	// are matched against the pods' SPIFFE IDs in that domain; a policy
	// written for the mesh's domain would otherwise name nobody (an ALLOW
	// admits nobody, a DENY never fires).
	if o.Authz.TrustDomain == "" {
		o.Authz.TrustDomain = o.Istio.TrustDomain
	}
	if o.AuthzDiscoveryPeriod <= 0 {
		o.AuthzDiscoveryPeriod = authzDiscoveryPeriod
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = xds.NewMetrics(nil)
	}
	return o
}

// Controller keeps every node's snapshot in the cache in line with the
// cluster.
type Controller struct {
	opts  Options
	log   *slog.Logger
	kube  kubernetes.Interface
	src   *sources
	cache *xds.Cache
	rep   *reporter

	gen atomic.Pointer[xds.Generation]
	ids atomic.Int64

	mu      sync.Mutex
	pending change
	kick    chan struct{}

	synced atomic.Bool
	apiErr atomic.Pointer[error]

	// jwks fetches the key sets of RequestAuthentication rules that name
	// a jwksUri or only an issuer (istiod's default: the controller
	// fetches, the nodes get them inline); a key set that arrives or
	// changes is a full translation.
	jwks *jwks.Resolver
}

// New makes a controller serving cache. It also becomes the cache's
// Provider (nodes connecting between pushes get the current generation) and
// NACK handler (rejections become Events).
func New(kube kubernetes.Interface, ic istioclient.Interface, c *xds.Cache, opts Options) *Controller {
	opts = opts.withDefaults()
	ctl := &Controller{
		opts: opts, log: opts.Logger, kube: kube, src: newSources(kube, ic), cache: c,
		kick: make(chan struct{}, 1),
	}
	ctl.rep = newReporter(kube, ctl.src, opts.Logger)
	jo := opts.JWKS
	jo.OnChange = func() { ctl.enqueue(change{full: true, first: time.Now(), events: 1}) }
	ctl.jwks = jwks.New(jo)
	c.Provider = ctl.Config
	c.OnNACK = ctl.rep.nack
	return ctl
}

// Config is the current configuration of a node (nil before the first
// translation).
func (c *Controller) Config(node *corev3.Node) *xds.Config {
	g := c.gen.Load()
	if g == nil {
		return nil
	}
	return g.ForNode(node.GetId(), xds.KindOf(node))
}

// Generation is the current generation (nil before the first translation).
func (c *Controller) Generation() *xds.Generation { return c.gen.Load() }

// Ready reports why the controller is not ready: caches not synced yet, or
// the API server unreachable. Not ready, it keeps serving the last snapshots.
func (c *Controller) Ready() error {
	if !c.synced.Load() {
		return errors.New("informer caches not synced")
	}
	if p := c.apiErr.Load(); p != nil && *p != nil {
		return fmt.Errorf("API server: %w", *p)
	}
	return nil
}

// Run watches the cluster until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer c.rep.stop()
	for _, inf := range c.src.all() {
		_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, r *cache.Reflector, err error) {
			c.log.Warn("watch failed; retrying", "reflector", r.TypeDescription(), "error", err)
		})
		if _, err := inf.AddEventHandler(c.handler()); err != nil {
			return err
		}
	}
	c.src.kube.Start(ctx.Done())
	c.src.istio.Start(ctx.Done())
	defer c.src.kube.Shutdown()
	defer c.src.istio.Shutdown()
	c.log.Info("waiting for informer caches")
	for t, ok := range c.src.kube.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync: %w", t, context.Cause(ctx))
		}
	}
	for t, ok := range c.src.istio.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync (are Istio's CRDs installed?): %w", t, context.Cause(ctx))
		}
	}
	// AuthorizationPolicies decide the nodes' inbound listeners: when the
	// kind is served now, they are part of the initial sync.
	authzStarted := false
	if ok, err := c.authzServed("authorizationpolicies"); err != nil {
		c.log.Warn("AuthorizationPolicy discovery failed; watching for the kind", "error", err)
	} else if ok {
		if !c.startAuthz(ctx) {
			return fmt.Errorf("cache of AuthorizationPolicies did not sync: %w", context.Cause(ctx))
		}
		authzStarted = true
	}
	// With Istio mTLS, PeerAuthentications decide the mode of the inbound
	// mTLS termination: part of the initial sync too (a restarted
	// controller never serves a STRICT port's plaintext chain).
	peerAuthnStarted := false
	if c.opts.Istio.IstioMTLS {
		if ok, err := c.authzServed("peerauthentications"); err != nil {
			c.log.Warn("PeerAuthentication discovery failed; watching for the kind", "error", err)
		} else if ok {
			if !c.startSecurity(ctx, peerAuthnKind, c.peerAuthnInformer, &c.src.peerAuthn, true) {
				return fmt.Errorf("cache of PeerAuthentications did not sync: %w", context.Cause(ctx))
			}
			peerAuthnStarted = true
		}
	}
	first := c.take()
	first.full = true
	if first.first.IsZero() {
		first.first = time.Now()
	}
	c.process(first)
	c.synced.Store(true)
	c.log.Info("caches synced; serving", "generation", c.gen.Load().ID)

	go c.probe(ctx)
	go c.jwks.Run(ctx)
	go c.watchAuthz(ctx, authzStarted, peerAuthnStarted)
	return c.loop(ctx)
}

func (c *Controller) handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			// The initial lists are in the stores before the first
			// translation reads them (Run waits for the caches); their
			// notifications arrive later and would only repeat it — at
			// 10,000 Services a second full generation while the first is
			// still being pushed.
			if !initial {
				c.enqueue(appeared(obj))
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			if ch, ok := c.src.classify(oldObj, newObj); ok {
				c.enqueue(ch)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			c.enqueue(appeared(obj))
		},
	}
}

// appeared is the change an object's creation or deletion makes: to the set
// of Nodes, to one Service's endpoints, or anything else (a full
// translation).
func appeared(obj any) change {
	now := time.Now()
	switch o := obj.(type) {
	case *corev1.Node:
		return change{nodes: true, first: now, events: 1}
	case *discoveryv1.EndpointSlice:
		return change{services: map[string]bool{o.Namespace + "/" + o.Labels[discoveryv1.LabelServiceName]: true}, first: now, events: 1}
	}
	return change{full: true, first: now, events: 1}
}

func (c *Controller) enqueue(ch change) {
	c.mu.Lock()
	c.pending.merge(ch)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Controller) take() change {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.pending
	c.pending = change{}
	return ch
}

// loop debounces changes: it recomputes once the cluster has been quiet for
// Debounce, or MaxDebounce after the first change of a batch.
func (c *Controller) loop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		}
		c.mu.Lock()
		first := c.pending.first
		c.mu.Unlock()
		if first.IsZero() {
			continue // taken by the initial translation
		}
		deadline := first.Add(c.opts.MaxDebounce)
		quiet := time.NewTimer(c.opts.Debounce)
	wait:
		for {
			select {
			case <-ctx.Done():
				quiet.Stop()
				return nil
			case <-c.kick:
				quiet.Reset(min(c.opts.Debounce, time.Until(deadline)))
			case <-quiet.C:
				break wait
			}
		}
		c.process(c.take())
	}
}

// process recomputes what a batch of changes affects and pushes it: a full
// translation, only the endpoints that changed, or (Nodes came or went) no
// translation at all.
func (c *Controller) process(ch change) {
	g := c.gen.Load()
	switch {
	case g == nil || ch.full:
		g = c.translate(ch)
	case len(ch.services) > 0:
		if next := c.updateEndpoints(g, ch); next != nil {
			g = next
		} else {
			g = c.translate(ch)
		}
	}
	c.push(g, ch.first)
	// Classes computed for nodes may have added diagnostics.
	c.rep.diagnostics(g.Diagnostics())
	if ch.full || ch.authz {
		// Pods, namespaces and Services decide where policies run.
		c.reportAuthz()
	}
}

// updateEndpoints recomputes only the endpoints of the Services in ch (nil
// when that cannot be done).
func (c *Controller) updateEndpoints(g *xds.Generation, ch change) *xds.Generation {
	start := time.Now()
	keys := slices.Sorted(maps.Keys(ch.services))
	next := g.WithEndpoints(c.ids.Add(1), ch.first, c.src.bag(), keys)
	if next == nil {
		return nil
	}
	c.opts.Metrics.Translations.WithLabelValues("endpoints").Inc()
	c.opts.Metrics.TranslationTime.WithLabelValues("endpoints").Observe(time.Since(start).Seconds())
	c.gen.Store(next)
	c.log.Info("endpoints updated", "generation", next.ID, "events", ch.events, "services", keys, "took", time.Since(start).Round(time.Millisecond))
	return next
}

func (c *Controller) translate(ch change) *xds.Generation {
	start := time.Now()
	bag := c.src.bag()
	g := xds.NewGeneration(c.ids.Add(1), ch.first, bag, nil, translate.Options{Istio: c.opts.Istio, Authz: c.opts.Authz, JWKS: c.jwks.Lookup})
	c.opts.Metrics.Translations.WithLabelValues("full").Inc()
	c.opts.Metrics.TranslationTime.WithLabelValues("full").Observe(time.Since(start).Seconds())
	sev := map[ir.Severity]float64{ir.SeverityError: 0, ir.SeverityWarning: 0, ir.SeverityInfo: 0}
	diags := g.Diagnostics()
	for _, d := range diags {
		sev[d.Severity]++
	}
	for s, n := range sev {
		c.opts.Metrics.Diagnostics.WithLabelValues(string(s)).Set(n)
	}
	for typ, size := range g.Sizes() {
		c.opts.Metrics.SnapshotBytes.WithLabelValues(typ).Set(float64(size.Bytes))
		c.opts.Metrics.SnapshotItems.WithLabelValues(typ).Set(float64(size.Items))
	}
	c.gen.Store(g)
	c.log.Info("translated", "generation", g.ID, "events", ch.events, "full", ch.full,
		"services", len(bag.Services), "diagnostics", len(diags), "took", time.Since(start).Round(time.Millisecond))
	return g
}

// push sets the configuration of every Node of the cluster and every
// connected client (gRPC clients are not Nodes), and forgets nodes that are
// neither any more.
func (c *Controller) push(g *xds.Generation, changed time.Time) {
	targets := map[string]xds.NodeKind{}
	for _, n := range c.src.nodeNames() {
		targets[n] = xds.EnvoyNode
	}
	for n, k := range c.cache.Connected() {
		targets[n] = k
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for n := range work {
				if err := c.cache.Push(g.ForNode(n, targets[n]), changed); err != nil {
					c.log.Error("push", "node", n, "error", err)
				}
			}
		})
	}
	for n := range targets {
		work <- n
	}
	close(work)
	wg.Wait()
	for _, n := range c.cache.Known() {
		if _, ok := targets[n]; !ok {
			c.cache.Forget(n)
		}
	}
	if !changed.IsZero() {
		c.opts.Metrics.PushLatency.Observe(time.Since(changed).Seconds())
	}
}

// probe checks the API server's readiness endpoint; while it fails the
// controller reports not ready and keeps serving what it has.
func (c *Controller) probe(ctx context.Context) {
	t := time.NewTicker(c.opts.ProbeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, min(c.opts.ProbeInterval, 5*time.Second))
		err := c.kube.Discovery().RESTClient().Get().AbsPath("/readyz").Do(pctx).Error()
		cancel()
		if ctx.Err() != nil {
			return
		}
		prev := c.apiErr.Swap(&err)
		switch {
		case err != nil && (prev == nil || *prev == nil):
			c.log.Warn("API server unreachable; serving the last snapshots", "error", err)
		case err == nil && prev != nil && *prev != nil:
			c.log.Info("API server reachable again")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
