//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

	"github.com/nodemesh/nodemesh/agent/cni"
	"github.com/nodemesh/nodemesh/agent/identity"
	"github.com/nodemesh/nodemesh/agent/ipam"
	"github.com/nodemesh/nodemesh/agent/policy"
	"github.com/nodemesh/nodemesh/bpf"
)

// Config is the agent's configuration; cmd/nodemesh-agent fills it from
// flags.
type Config struct {
	NodeName string
	// Namespace and PodName are the agent's own pod's. The DaemonSet
	// owning that pod is watched: stopped while it is being deleted (an
	// uninstall), the agent removes nodemesh from the node (uninstall.go).
	// Either empty: never. Namespace also holds the identity collection's
	// Lease.
	Namespace string
	PodName   string
	Kube      kubernetes.Interface
	Dynamic   dynamic.Interface

	// BPFFS is a mounted bpffs; the agent keeps its pins in BPFFS/nodemesh.
	BPFFS string
	// CgroupRoot is the cgroup v2 directory the redirection programs are
	// attached to (the cgroup v2 root in production).
	CgroupRoot string
	// StateDir holds IPAM leases and endpoint records.
	StateDir string
	PodCIDR  netip.Prefix
	// CNIConfDir gets the conflist; CNIBinDir gets a copy of CNIPlugin (when
	// set). CNISocket is where the plugin reaches the agent.
	CNIConfDir string
	CNIBinDir  string
	CNIPlugin  string
	CNISocket  string
	// ProxyAddress is where redirected connections go; default: the pod
	// CIDR's gateway address, port 15001.
	ProxyAddress netip.AddrPort
	// NodeIPs are mapped to the HOST identity (the gateway always is).
	NodeIPs []netip.Addr
	// NodeNetns is the network namespace of the node ("" = the agent's
	// own, as in a hostNetwork DaemonSet); tests run the node in a netns.
	NodeNetns string
	// SysctlNetDir shows /proc/sys/net (default DefaultSysctlNetDir; in
	// the DaemonSet a hostPath mount of it, /proc/sys being read-only in
	// an unprivileged container).
	SysctlNetDir string
	// MTU of pods' interfaces; 0: the uplinks' (the smallest), less
	// VXLANOverhead in VXLAN mode.
	MTU int
	// AllowHostIngress lets the node reach pods isolated for ingress
	// (kubelet probes).
	AllowHostIngress bool
	// RootNamespace is Istio's root namespace (default istio-system): its
	// AuthorizationPolicies apply to every namespace.
	RootNamespace string
	// TrustDomain is the mesh's trust domain (default cluster.local), the
	// trust domain of every pod's principal, and TrustDomainAliases the
	// ones it also answers to (meshConfig trustDomainAliases).
	TrustDomain        string
	TrustDomainAliases []string
	// AuthzDiscoveryPeriod is how often the agent asks whether the API
	// serves AuthorizationPolicies while it does not (default 30s).
	AuthzDiscoveryPeriod time.Duration
	// ResyncPeriod is how often everything is reconciled without a change.
	ResyncPeriod time.Duration
	// ADD attaches the policy programs as cls_bpf filters; they move to
	// tcx once CNI calls have been quiet for AttachQuietPeriod (default
	// 200ms), at the latest AttachMaxDelay (default 2s) after the ADD (see
	// tcxUpgrades).
	AttachQuietPeriod time.Duration
	AttachMaxDelay    time.Duration
	// Identities no pod of the cluster has used for IdentityGCGrace
	// (default 15m) are deleted, checked every IdentityGCPeriod (default
	// 5m), by the agent holding the Lease IdentityGCLease in Namespace (no
	// Namespace: no collection). DisableIdentityGC turns it off.
	// The node proxy's upstream connections carry the client pod's address
	// (original_src); their replies are handed back to the proxy by the
	// policy programs and, for replies from other nodes, by a program on
	// each of Uplinks (default: the interfaces of the default routes).
	// DisableProxyReturn turns that off (docs/design/datapath.md).
	DisableProxyReturn bool
	Uplinks            []string
	// DisableInboundCapture leaves every connection to a pod on its L4
	// path: no port of a pod under an AuthorizationPolicy with HTTP facts
	// is captured into the node Envoy's inbound listener (its L7 rules are
	// then enforced by their L4 projection, which denies more). Capture
	// needs the proxy return path: DisableProxyReturn implies it.
	DisableInboundCapture bool
	// IstioMTLS: the node Envoy terminates Istio mTLS for sidecar clients
	// (the controller's --istio-mtls, the chart's mtls.enabled): the ports
	// a DestinationRule ISTIO_MUTUAL may make them send mTLS to are
	// captured too (translate/authz.Capture.WithMTLS), and
	// DestinationRules are watched. ClusterDomain is the Services' DNS
	// domain their hosts name (default cluster.local).
	IstioMTLS     bool
	ClusterDomain string
	// DisableSocketLB leaves connections to Services alone (kube-proxy
	// serves them): the socket load balancing maps are emptied and kept
	// empty. Enabled, every connect() and UDP sendmsg() to a ClusterIP or a
	// NodePort on this node's addresses goes to a ready endpoint
	// (docs/design/datapath.md, "Socket load balancing").
	DisableSocketLB bool
	// RoutingMode says how pods reach other nodes' pods: RoutingNative
	// (default), RoutingVXLAN or RoutingNone (routing.go). VXLANVNI and
	// VXLANPort configure the vxlan device (defaults DefaultVXLANVNI,
	// DefaultVXLANPort).
	RoutingMode string
	// CNIMode is CNIStandalone (default) or CNIChained (chained.go).
	CNIMode   string
	VXLANVNI  int
	VXLANPort int
	// Masquerade SNATs this node's pods' IPv4 traffic leaving through an
	// uplink to a destination outside the cluster to the uplink's address
	// (masq.go); NonMasqueradeCIDRs are destinations left alone besides
	// pod CIDRs, Node addresses and link-local. MasqueradePortRange
	// ("min-max") is the NAT source port range; empty: the ports above
	// the node's ephemeral range.
	Masquerade          bool
	NonMasqueradeCIDRs  []netip.Prefix
	MasqueradePortRange string
	IdentityGCPeriod    time.Duration
	IdentityGCGrace     time.Duration
	DisableIdentityGC   bool
	Logger              *slog.Logger
}

// Pin layout under BPFFS.
const pinDirName = "nodemesh"

// Agent is a running node agent.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	pol  *bpf.Policy
	red  *bpf.Redirect
	masq *bpf.Masq
	cg   *bpf.CgroupAttachment
	ipam *ipam.Store
	node *netlink.Handle

	records   recordStore
	authz     authzWatch
	peerAuthn authzWatch
	reqAuthn  authzWatch
	// destRules are Istio's DestinationRules, watched with IstioMTLS only.
	destRules authzWatch
	pinLinks  string
	sysctls   netSysctls
	allocator *identity.Allocator
	recorder  record.EventRecorder
	metrics   *metrics
	informers *watchers
	owner     *ownerWatch // nil: the owning DaemonSet is not known
	// cleaned: the node was cleaned; the agent serves nothing any more.
	cleaned atomic.Bool

	mu        sync.Mutex
	endpoints map[string]*endpointRecord
	cidrs     *policy.CIDRAllocator
	lastDiags map[string]bool
	// badDestRules are the DestinationRules reported as unreadable (each
	// logged once while it stays so; under mu).
	badDestRules map[string]bool
	// lastLBDiags are the socket load balancing's diagnostics logged.
	lastLBDiags map[string]bool

	ready    chan struct{}
	trigger  chan struct{}
	upgrades *tcxUpgrades

	// uplinks are the node's interfaces to other nodes (Config.Uplinks
	// or the default routes'); vxlanIndex is the vxlan device's ifindex
	// in VXLAN mode; lastSkipped the Nodes last left without a route and
	// why (logged when it changes).
	uplinks     []string
	vxlanIndex  int
	lastSkipped map[string]string
	// lastRouteErr is the last route sync's error (logged when it changes).
	lastRouteErr string
}

func (c *Config) defaults() error {
	if c.NodeName == "" {
		return errors.New("node name is required")
	}
	if !c.PodCIDR.IsValid() || !c.PodCIDR.Addr().Is4() {
		return errors.New("an IPv4 pod CIDR is required")
	}
	if c.Kube == nil || c.Dynamic == nil {
		return errors.New("the Kubernetes clients are required")
	}
	for name, v := range map[string]string{"bpffs": c.BPFFS, "cgroup root": c.CgroupRoot, "state dir": c.StateDir, "CNI socket": c.CNISocket} {
		if v == "" {
			return fmt.Errorf("%s is required", name)
		}
	}
	if !c.ProxyAddress.IsValid() {
		c.ProxyAddress = netip.AddrPortFrom(c.PodCIDR.Masked().Addr().Next(), bpf.ProxyOutboundPort)
	}
	switch c.CNIMode {
	case "":
		c.CNIMode = CNIStandalone
	case CNIStandalone, CNIChained:
	default:
		return fmt.Errorf("CNI mode %q: want one of %v", c.CNIMode, CNIModes)
	}
	switch c.RoutingMode {
	case "":
		c.RoutingMode = RoutingNative
	case RoutingNative, RoutingVXLAN, RoutingNone:
	default:
		return fmt.Errorf("routing mode %q: want one of %v", c.RoutingMode, RoutingModes)
	}
	if c.Masquerade && c.CNIMode == CNIChained {
		return errors.New("masquerading is the primary CNI's in chained mode: turn one of them off")
	}
	for _, p := range c.NonMasqueradeCIDRs {
		if !p.IsValid() || !p.Addr().Is4() {
			return fmt.Errorf("non-masquerade CIDR %s: want an IPv4 prefix", p)
		}
	}
	if c.VXLANVNI == 0 {
		c.VXLANVNI = DefaultVXLANVNI
	}
	if c.VXLANVNI < 1 || c.VXLANVNI > 1<<24-1 {
		return fmt.Errorf("VXLAN VNI %d: want 1 to %d", c.VXLANVNI, 1<<24-1)
	}
	if c.VXLANPort == 0 {
		c.VXLANPort = DefaultVXLANPort
	}
	if c.VXLANPort < 1 || c.VXLANPort > 65535 {
		return fmt.Errorf("VXLAN port %d: want 1 to 65535", c.VXLANPort)
	}
	if c.MTU < 0 || (c.MTU > 0 && c.MTU < 576) {
		return fmt.Errorf("MTU %d: want at least 576 (0: the uplinks')", c.MTU)
	}
	if c.SysctlNetDir == "" {
		c.SysctlNetDir = DefaultSysctlNetDir
	}
	if c.AttachQuietPeriod == 0 {
		c.AttachQuietPeriod = 200 * time.Millisecond
	}
	if c.AttachMaxDelay == 0 {
		c.AttachMaxDelay = 2 * time.Second
	}
	if c.IdentityGCPeriod == 0 {
		c.IdentityGCPeriod = 5 * time.Minute
	}
	if c.IdentityGCGrace == 0 {
		c.IdentityGCGrace = 15 * time.Minute
	}
	if c.ResyncPeriod == 0 {
		c.ResyncPeriod = 5 * time.Minute
	}
	if c.RootNamespace == "" {
		c.RootNamespace = "istio-system"
	}
	if c.DisableProxyReturn {
		// Capture hands connections to the proxy, whose upstream needs the
		// return path.
		c.DisableInboundCapture = true
	}
	if c.TrustDomain == "" {
		c.TrustDomain = "cluster.local"
	}
	if c.AuthzDiscoveryPeriod == 0 {
		c.AuthzDiscoveryPeriod = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// New loads (or takes over) the datapath and the agent's state. It changes
// nothing that established connections depend on: maps and links pinned by
// an earlier agent are reused and their programs replaced in place.
func New(cfg Config, reg prometheus.Registerer) (*Agent, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, sysctls: netSysctls(cfg.SysctlNetDir), endpoints: map[string]*endpointRecord{},
		lastDiags: map[string]bool{}, ready: make(chan struct{}), trigger: make(chan struct{}, 1), upgrades: newTCXUpgrades()}
	a.authz.resource, a.authz.kind = "authorizationpolicies", "AuthorizationPolicy"
	a.peerAuthn.resource, a.peerAuthn.kind = "peerauthentications", "PeerAuthentication"
	a.reqAuthn.resource, a.reqAuthn.kind = "requestauthentications", "RequestAuthentication"
	a.destRules.resource, a.destRules.kind = "destinationrules", "DestinationRule"
	a.destRules.group, a.destRules.versions = "networking.istio.io", []string{"v1", "v1beta1", "v1alpha3"}
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()
	if err := checkBPFFS(cfg.BPFFS); err != nil {
		return nil, err
	}
	pinRoot := filepath.Join(cfg.BPFFS, pinDirName)
	a.pinLinks = filepath.Join(pinRoot, "links")
	for _, d := range []string{a.pinLinks, filepath.Join(cfg.StateDir, "endpoints")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	var err error
	opts := bpf.LoadOptions{PinPath: filepath.Join(pinRoot, "maps")}
	if a.pol, err = bpf.LoadPolicy(opts); err != nil {
		return nil, err
	}
	if a.red, err = bpf.LoadRedirect(opts); err != nil {
		return nil, err
	}
	// Loaded even when masquerading is off, to turn off what an earlier
	// agent left pinned.
	if a.masq, err = bpf.LoadMasq(opts, bpf.MasqLifetimes{}); err != nil {
		return nil, err
	}
	if a.cg, err = a.red.AttachCgroup(cfg.CgroupRoot, filepath.Join(pinRoot, "cgroup")); err != nil {
		return nil, err
	}
	if err := a.red.SetProxy(cfg.ProxyAddress); err != nil {
		return nil, err
	}
	if a.ipam, err = ipam.Open(filepath.Join(cfg.StateDir, "ipam"), cfg.PodCIDR); err != nil {
		return nil, err
	}
	if a.node, err = netlinkAt(cfg.NodeNetns); err != nil {
		return nil, err
	}
	if err := inNetns(cfg.NodeNetns, func() error { return a.sysctls.write("ipv4/ip_forward", "1") }); err != nil {
		return nil, err
	}
	if err := inNetns(cfg.NodeNetns, func() error {
		var err error
		a.uplinks, err = resolveUplinks(cfg.Uplinks)
		return err
	}); err != nil {
		return nil, err
	}
	if a.cfg.MTU == 0 {
		mtu, err := uplinkMTU(a.node, a.uplinks)
		if err != nil {
			return nil, err
		}
		a.cfg.MTU = podMTU(a.cfg.RoutingMode, mtu)
	}
	if err := a.setupRouting(); err != nil {
		return nil, fmt.Errorf("%s routing: %w", a.cfg.RoutingMode, err)
	}
	if err := a.setupProxyReturn(); err != nil {
		return nil, fmt.Errorf("node proxy return path: %w", err)
	}
	if err := a.setupMasquerade(); err != nil {
		return nil, fmt.Errorf("masquerading: %w", err)
	}
	existing, err := a.pol.Identities()
	if err != nil {
		return nil, err
	}
	a.cidrs = policy.NewCIDRAllocator(existing)
	a.records = recordStore{dir: filepath.Join(cfg.StateDir, "endpoints")}
	if err := a.restoreEndpoints(); err != nil {
		return nil, err
	}
	a.metrics = newMetrics(a, reg)
	a.informers = newInformers(a)
	a.allocator = &identity.Allocator{Client: cfg.Dynamic, Known: a.informers.identitiesByHash}
	a.recorder = newRecorder(cfg.Kube, cfg.NodeName)
	ok = true
	return a, nil
}

func checkBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("bpffs %s: %w", dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("%s is not a bpffs (mount one: mount -t bpf bpf %s)", dir, dir)
	}
	return nil
}

// restoreEndpoints reads the endpoint records and takes over their
// interfaces: programs are replaced in place on live veths; records whose
// veth vanished are marked gone and their map entries and pins removed.
func (a *Agent) restoreEndpoints() error {
	recs, err := a.records.load()
	if err != nil {
		return err
	}
	live := map[int]bool{}
	for _, r := range recs {
		a.endpoints[r.key()] = r
		l, err := a.node.LinkByName(r.HostIfName)
		if err != nil || l.Attrs().Index != r.HostIfindex {
			r.gone = true
			a.removePins(r.HostIfName)
			a.log.Warn("endpoint's veth is gone; waiting for CNI DEL to release its address",
				"pod", r.Namespace+"/"+r.Name, "veth", r.HostIfName)
			continue
		}
		live[r.HostIfindex] = true
		if err := a.attachTC(r); err != nil {
			return fmt.Errorf("take over programs of %s: %w", r.HostIfName, err)
		}
		// Pods set up by an agent that left IPv6 on: off now. The
		// programs drop it anyway (datapath.md, "Verdict order").
		if err := a.podIPv6Off(r.HostIfName, r.Netns, r.IfName); err != nil {
			a.log.Warn("cannot disable IPv6 on a pod's veth (the policy programs drop it)", "pod", r.Namespace+"/"+r.Name, "error", err)
		}
	}
	eps, err := a.pol.Endpoints()
	if err != nil {
		return err
	}
	for ifindex := range eps {
		if !live[ifindex] {
			if err := a.pol.DeleteEndpoint(ifindex); err != nil {
				return err
			}
		}
	}
	a.log.Info("restored endpoints", "records", len(recs), "live", len(live))
	return nil
}

func (a *Agent) pinPath(hostIfName string, dir bpf.Direction) string {
	suffix := "to_pod"
	if dir == bpf.Egress {
		suffix = "from_pod"
	}
	return filepath.Join(a.pinLinks, hostIfName+"_"+suffix)
}

func (a *Agent) removePins(hostIfName string) {
	for _, d := range []bpf.Direction{bpf.Ingress, bpf.Egress} {
		if err := os.Remove(a.pinPath(hostIfName, d)); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("remove pin", "error", err)
		}
	}
}

// Run serves the CNI plugin, watches the cluster and keeps the maps in line
// until ctx ends. metricsAddr may be empty.
//
// When ctx ends (SIGTERM) because the DaemonSet owning the agent's pod is
// being deleted — an uninstall —, Run removes nodemesh from the node
// before it returns (uninstall.go); otherwise the datapath stays.
func (a *Agent) Run(ctx context.Context, metricsAddr string) error {
	err := a.run(ctx, metricsAddr)
	a.log.Debug("stopping", "error", err)
	if ctx.Err() != nil {
		a.cleanupOnExit()
		if errors.Is(err, context.Canceled) {
			err = nil
		}
	}
	if a.owner != nil {
		a.owner.close()
	}
	return err
}

func (a *Agent) run(ctx context.Context, metricsAddr string) error {
	sockDir := filepath.Dir(a.cfg.CNISocket)
	if err := os.MkdirAll(sockDir, 0o700); err != nil {
		return err
	}
	_ = os.Remove(a.cfg.CNISocket)
	cniListener, err := net.Listen("unix", a.cfg.CNISocket)
	if err != nil {
		return fmt.Errorf("CNI socket: %w", err)
	}
	defer os.Remove(a.cfg.CNISocket)
	var monListener net.Listener
	if metricsAddr != "" {
		if monListener, err = net.Listen("tcp", metricsAddr); err != nil {
			cniListener.Close()
			return fmt.Errorf("metrics server: %w", err)
		}
	}
	errs := make(chan error, 2)
	go func() { errs <- cni.Serve(cniListener, a) }()
	var mon *http.Server
	if monListener != nil {
		mon = &http.Server{Handler: a.metrics.handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := mon.Serve(monListener); !errors.Is(err, http.ErrServerClosed) {
				errs <- err
			}
		}()
	}
	defer func() {
		cniListener.Close()
		if mon != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			mon.Shutdown(sctx)
			cancel()
		}
	}()

	watches := a.istioWatches()
	watching := make([]bool, len(watches))
	for i, w := range watches {
		if watching[i], err = a.startAuthz(w); err != nil {
			return err
		}
	}
	a.informers.start(ctx)
	for i, w := range watches {
		if watching[i] {
			a.informers.synced = append(a.informers.synced, w.informer().HasSynced)
			continue
		}
		a.log.Info("the API serves no "+w.kind+"s (Istio is not installed); asking again", "every", a.cfg.AuthzDiscoveryPeriod)
		go a.awaitAuthz(ctx, w, a.cfg.AuthzDiscoveryPeriod)
	}
	if !a.informers.waitForSync(ctx) {
		return ctx.Err()
	}
	a.watchOwner(ctx)
	if err := a.watchUplinks(ctx); err != nil {
		return err
	}
	// First reconcile with the whole picture; until then the pinned state
	// keeps being enforced as the previous agent left it.
	for {
		err := a.Sync(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.log.Error("initial sync failed; retrying", "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	// The configuration tells the runtime the node can run pods: write it
	// once the agent can serve them, and before /readyz says so.
	if err := a.installCNI(); err != nil {
		return err
	}
	go a.runTCXUpgrades(ctx)
	if a.cfg.CNIMode == CNIChained && a.cfg.CNIConfDir != "" {
		go a.keepChained(ctx, chainCheckPeriod)
	}
	if a.cfg.Namespace != "" && !a.cfg.DisableIdentityGC {
		go a.runIdentityGC(ctx)
	}
	close(a.ready)
	a.log.Info("agent ready", "node", a.cfg.NodeName, "podCIDR", a.cfg.PodCIDR, "proxy", a.cfg.ProxyAddress,
		"routing", a.cfg.RoutingMode, "mtu", a.cfg.MTU, "uplinks", a.uplinks)
	return a.loop(ctx, errs)
}

func (a *Agent) loop(ctx context.Context, errs chan error) error {
	resync := time.NewTicker(a.cfg.ResyncPeriod)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err
		case <-a.trigger:
		case <-resync.C:
		}
		// Let a burst of changes settle.
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return nil
		}
		if err := a.Sync(ctx); err != nil {
			a.log.Error("sync failed; retrying", "error", err)
			time.AfterFunc(time.Second, a.Trigger)
		}
	}
}

// Trigger asks for a reconcile.
func (a *Agent) Trigger() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

// Ready is closed once the agent has synced with the API and reconciled.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

func (a *Agent) isReady() bool {
	if a.cleaned.Load() {
		return false
	}
	select {
	case <-a.ready:
		return true
	default:
		return false
	}
}

// Close releases the agent's handles. Pinned maps and links stay: the
// datapath keeps enforcing policy while no agent runs.
func (a *Agent) Close() error {
	var errs []error
	if a.cg != nil {
		errs = append(errs, a.cg.Close())
	}
	if a.red != nil {
		errs = append(errs, a.red.Close())
	}
	if a.masq != nil {
		errs = append(errs, a.masq.Close())
	}
	if a.pol != nil {
		errs = append(errs, a.pol.Close())
	}
	if a.node != nil {
		a.node.Delete()
	}
	return errors.Join(errs...)
}
