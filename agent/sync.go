//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/nodemesh/nodemesh/agent/identity"
	"github.com/nodemesh/nodemesh/agent/mapsync"
	"github.com/nodemesh/nodemesh/agent/policy"
	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/translate/authz"
)

// Sync reconciles every map with the cluster: identities of local pods,
// NetworkPolicies, Services (redirection and socket load balancing) and
// opt-in. It is level-triggered and
// idempotent; an unchanged cluster writes nothing.
func (a *Agent) Sync(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.syncLocked(ctx)
}

func (a *Agent) syncLocked(ctx context.Context) error {
	var errs []error
	for _, r := range a.endpoints {
		if r.gone {
			continue
		}
		if err := a.refreshRecord(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	if err := a.syncPolicy(); err != nil {
		errs = append(errs, err)
	}
	if err := a.syncRedirect(); err != nil {
		errs = append(errs, err)
	}
	if err := a.syncSocketLB(); err != nil {
		errs = append(errs, err)
	}
	a.syncRoutes()
	if err := a.syncMasquerade(); err != nil {
		errs = append(errs, err)
	}
	a.metrics.syncs.Inc()
	if err := errors.Join(errs...); err != nil {
		a.metrics.syncErrors.Inc()
		return err
	}
	return nil
}

// podFacts copies what the agent uses of a pod into its record.
func podFacts(r *endpointRecord, pod *corev1.Pod) {
	r.ServiceAccount = pod.Spec.ServiceAccountName
	r.Labels = maps.Clone(pod.Labels)
	r.UID = string(pod.UID)
	r.Ports = nil
	r.Sidecar = false
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name == api.IstioProxyContainer {
			r.Sidecar = true
		}
		for _, p := range c.Ports {
			proto, ok := map[corev1.Protocol]uint8{"": bpf.ProtoTCP, corev1.ProtocolTCP: bpf.ProtoTCP,
				corev1.ProtocolUDP: bpf.ProtoUDP, corev1.ProtocolSCTP: bpf.ProtoSCTP}[p.Protocol]
			if ok && p.Name != "" && p.ContainerPort > 0 && p.ContainerPort < 65536 {
				r.Ports = append(r.Ports, policy.NamedPort{Name: p.Name, Port: uint16(p.ContainerPort), Proto: proto})
			}
		}
	}
}

// refreshRecord updates a record from its pod (labels may have changed) and
// allocates a new identity when its key changed.
func (a *Agent) refreshRecord(ctx context.Context, r *endpointRecord) error {
	pod, err := a.informers.pods.Pods(r.Namespace).Get(r.Name)
	if err == nil && (r.UID == "" || string(pod.UID) == r.UID) {
		podFacts(r, pod)
	} else if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	// A pod gone from the API keeps its last identity until CNI DEL.
	key := identity.KeyOf(r.Namespace, r.ServiceAccount, r.Labels)
	if key.Hash() == r.IdentityHash && r.Identity != 0 {
		if a.informers.hasIdentity(r.Identity, key) {
			return nil
		}
		// Not in the informer: just allocated (it lags), or collected
		// while unused and now used again: re-create it.
		err := a.allocator.Ensure(ctx, r.Identity, key)
		if !errors.Is(err, identity.ErrTaken) {
			if err != nil {
				return fmt.Errorf("identity %d of pod %s/%s: %w", r.Identity, r.Namespace, r.Name, err)
			}
			return nil
		}
		a.log.Warn("pod's identity number was collected and taken by another key; allocating again",
			"pod", r.Namespace+"/"+r.Name, "identity", r.Identity)
	}
	id, err := a.allocator.Allocate(ctx, key)
	if err != nil {
		return fmt.Errorf("identity of pod %s/%s: %w", r.Namespace, r.Name, err)
	}
	if r.Identity != 0 && r.Identity != id {
		a.log.Info("pod identity changed", "pod", r.Namespace+"/"+r.Name, "from", r.Identity, "to", id)
	}
	r.Identity, r.IdentityHash = id, key.Hash()
	return a.records.save(r)
}

// redirected reports whether a pod's connections go to the node proxy.
func (a *Agent) redirected(r *endpointRecord) bool {
	if r.Sidecar || r.Labels[api.DataplaneModeLabel] == api.DataplaneModeNone {
		return false
	}
	ns, err := a.informers.namespaces.Get(r.Namespace)
	if err != nil {
		return false
	}
	if ns.Labels[api.DataplaneModeLabel] != api.DataplaneModeNodemesh {
		return false
	}
	// A namespace still injected with sidecars is left to Istio.
	if ns.Labels[api.IstioInjectionLabel] == api.IstioInjectionEnabled || ns.Labels[api.IstioRevisionLabel] != "" {
		return false
	}
	return true
}

func (a *Agent) liveRecords() []*endpointRecord {
	var out []*endpointRecord
	for _, r := range a.endpoints {
		if !r.gone && r.Identity != 0 {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

// policyInput gathers what policy.Translate reads; diags are problems
// found before translation (a TrafficPolicy that does not decode).
func (a *Agent) policyInput() (in policy.Input, diags []policy.Diagnostic, err error) {
	in = policy.Input{
		Namespaces:       map[string]map[string]string{},
		CIDRs:            a.cidrs,
		AllowHostIngress: a.cfg.AllowHostIngress,
		ProxyPort:        a.cfg.ProxyAddress.Port(),
		TrustDomain:      a.cfg.TrustDomain,
	}
	nss, err := a.informers.namespaces.List(everything())
	if err != nil {
		return in, nil, err
	}
	for _, ns := range nss {
		in.Namespaces[ns.Name] = ns.Labels
	}
	if in.Policies, err = a.informers.policies.List(everything()); err != nil {
		return in, nil, err
	}
	var bad map[*unstructured.Unstructured]error
	in.TrafficPolicies, bad = a.informers.trafficPolicies()
	for u, err := range bad {
		// What it selects and allows is unknown: every pod of its
		// namespace is isolated both ways and nothing is allowed by it.
		in.TrafficPolicies = append(in.TrafficPolicies, &policy.TrafficPolicy{Namespace: u.GetNamespace(), Name: u.GetName(),
			Spec: v1alpha1.TrafficPolicySpec{Action: v1alpha1.ActionAllow}, HasIngress: true, HasEgress: true})
		diags = append(diags, policy.Diagnostic{Severity: policy.Warning, Kind: policy.KindTrafficPolicy, Namespace: u.GetNamespace(),
			Name: u.GetName(), Field: "spec", Message: fmt.Sprintf("cannot be read (%v): every pod of the namespace is isolated, no rule of it applies", err)})
	}
	authzModels, authzDiags := a.authorizationPolicies()
	in.Models = append(in.Models, authzModels...)
	diags = append(diags, authzDiags...)
	peerAuthn, peerAuthnDiags := a.peerAuthentications()
	in.PeerAuthn = peerAuthn
	diags = append(diags, peerAuthnDiags...)
	svcs, err := a.informers.services.List(everything())
	if err != nil {
		return in, nil, err
	}
	for _, s := range svcs {
		in.Services = append(in.Services, policy.Service{Namespace: s.Namespace, Name: s.Name, Selector: s.Spec.Selector})
	}
	seen := map[bpf.Identity]bool{}
	for _, id := range a.informers.allIdentities() {
		seen[id.ID] = true
		in.Identities = append(in.Identities, policy.Identity{ID: id.ID, Namespace: id.Key.Namespace, ServiceAccount: id.Key.ServiceAccount, Labels: id.Key.Labels})
	}
	// The ports the node Envoy's inbound listener captures: the
	// controller serves their chains by the same decision.
	var capture *authz.Capture
	if !a.cfg.DisableInboundCapture {
		capture = authz.NewCapture(authzModels, svcs).WithAuthn(a.requestAuthnScopes(), svcs)
		if a.cfg.IstioMTLS {
			capture.WithMTLS(authz.MTLSTermination{DestinationRules: a.destinationRules(), PeerAuthn: peerAuthn, ClusterDomain: a.cfg.ClusterDomain})
		}
	}
	for _, r := range a.liveRecords() {
		redirected := a.redirected(r)
		ep := policy.Endpoint{Namespace: r.Namespace, Name: r.Name, Labels: r.Labels,
			Identity: r.Identity, Key: bpf.EndpointKey(r.HostIfindex), Ports: r.Ports, Redirected: redirected, Meshed: redirected}
		if capture != nil && redirected {
			ep.Captured, ep.CapturedForMTLS = capturedPorts(capture, r, in.Namespaces[r.Namespace])
		}
		in.Endpoints = append(in.Endpoints, ep)
		if !seen[r.Identity] {
			// Just allocated; the informer has not seen it yet.
			seen[r.Identity] = true
			k := identity.KeyOf(r.Namespace, r.ServiceAccount, r.Labels)
			in.Identities = append(in.Identities, policy.Identity{ID: r.Identity, Namespace: r.Namespace, ServiceAccount: k.ServiceAccount, Labels: k.Labels})
		}
	}
	return in, diags, nil
}

// syncPolicy writes the identity, policy, endpoint and local endpoint maps:
// it translates the cluster's policies into the state the maps should hold
// and applies the plan that gets them there (agent/mapsync: writes ordered
// so that no moment allows what neither the old nor the new state allows;
// endpoints whose allowed set may have shrunk get a new policy revision
// last, so their established flows are decided again against the final
// entries).
func (a *Agent) syncPolicy() error {
	in, diags, err := a.policyInput()
	if err != nil {
		return err
	}
	remote, unresolved, err := a.remoteIdentities()
	if err != nil {
		return err
	}
	// Istio's ipBlocks match pods' addresses too: the authorization gate
	// needs which addresses each identity's pods have.
	in.PeerAddrs = map[bpf.Identity][]netip.Addr{}
	for pfx, id := range remote {
		in.PeerAddrs[id] = append(in.PeerAddrs[id], pfx.Addr())
	}
	for _, r := range a.liveRecords() {
		in.PeerAddrs[r.Identity] = append(in.PeerAddrs[r.Identity], r.IP)
	}
	res := policy.Translate(in)
	a.report(append(res.Diagnostics, diags...))

	want := mapsync.Want{Identities: map[netip.Prefix]bpf.Identity{}, Policies: map[bpf.PolicyKey]bpf.Verdict{},
		Ranges: map[bpf.PortRangeKey]bpf.Verdict{}}
	maps.Copy(want.Identities, res.CIDRs)
	maps.Copy(want.Identities, remote)
	for _, ip := range append([]netip.Addr{a.ipam.Gateway()}, a.cfg.NodeIPs...) {
		want.Identities[netip.PrefixFrom(ip, 32)] = bpf.IdentityHost
	}
	recs := a.liveRecords()
	for _, r := range recs {
		want.Identities[netip.PrefixFrom(r.IP, 32)] = r.Identity
	}
	for _, ip := range res.Identities {
		maps.Copy(want.Policies, ip.Entries)
		maps.Copy(want.Ranges, ip.Ranges)
	}
	// recs are in.Endpoints, in order: each pod's entries are under its
	// identity, or under its endpoint key when policies treat it unlike
	// other pods of its identity (the endpoint's Identity field is only
	// the key of its entries to the programs).
	if len(recs) != len(res.EndpointKeys) {
		return fmt.Errorf("policy translated %d endpoints, %d are live", len(res.EndpointKeys), len(recs))
	}
	for i, r := range recs {
		key := res.EndpointKeys[i]
		pod := mapsync.Pod{Ifindex: r.HostIfindex, IP: r.IP.As4(), Identity: key, NetnsCookie: r.NetnsCookie}
		if ip := res.Identities[key]; ip != nil {
			pod.Flags = ip.Flags
		}
		want.Pods = append(want.Pods, pod)
	}

	// Captured ports: new captures are written before the policy that
	// leaves those ports to the node Envoy (no moment where an uncaptured
	// connection meets the relaxed gate), stale ones removed after the
	// policy that decides them again at L4.
	wantCaptures := map[netip.AddrPort]bool{}
	for i, r := range recs {
		for _, p := range slices.Concat(in.Endpoints[i].Captured, in.Endpoints[i].CapturedForMTLS) {
			wantCaptures[netip.AddrPortFrom(r.IP, p)] = true
		}
	}
	var haveCaptures []netip.AddrPort
	if !a.cfg.DisableInboundCapture { // off: cleared once at start (setupProxyReturn)
		if haveCaptures, err = a.pol.InboundCaptures(); err != nil {
			return fmt.Errorf("read the inbound captures: %w", err)
		}
	}
	for ap := range wantCaptures {
		if !slices.Contains(haveCaptures, ap) {
			if err := a.pol.PutInboundCapture(ap.Addr(), ap.Port()); err != nil {
				return fmt.Errorf("capture %s: %w", ap, err)
			}
		}
	}

	have, err := mapsync.Read(a.pol)
	if err != nil {
		return err
	}
	if err := mapsync.Apply(a.pol, mapsync.NewPlan(have, want)); err != nil {
		return fmt.Errorf("write the policy maps: %w", err)
	}
	for _, ap := range haveCaptures {
		if !wantCaptures[ap] {
			if err := a.pol.DeleteInboundCapture(ap.Addr(), ap.Port()); err != nil {
				return fmt.Errorf("stop capturing %s: %w", ap, err)
			}
		}
	}
	a.metrics.inboundCaptures.Set(float64(len(wantCaptures)))
	a.metrics.policyEntries.Set(float64(len(want.Policies) + len(want.Ranges)))
	a.metrics.remoteEndpoints.WithLabelValues("resolved").Set(float64(len(remote)))
	a.metrics.remoteEndpoints.WithLabelValues("unresolved").Set(float64(unresolved))
	a.metrics.endpoints.Set(float64(len(recs)))
	return nil
}

// remoteIdentities maps the addresses of other nodes' pods to their
// identities, so that policy sees who a packet from another node comes
// from. The owning node allocates a pod's identity; this node only looks
// it up (an address whose identity is not known yet stays WORLD, as do
// pods that ended, addresses inside this node's pod CIDR — its own pods
// are authoritative there — and an address two pods with different
// identities claim).
func (a *Agent) remoteIdentities() (ids map[netip.Prefix]bpf.Identity, unresolved int, err error) {
	pods, err := a.informers.remotePods.List(everything())
	if err != nil {
		return nil, 0, err
	}
	ids = map[netip.Prefix]bpf.Identity{}
	conflict := map[netip.Prefix]bool{}
	for _, p := range pods {
		if p.Spec.NodeName == a.cfg.NodeName || p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		var addrs []netip.Addr
		for _, ip := range p.Status.PodIPs {
			if addr, err := netip.ParseAddr(ip.IP); err == nil && addr.Is4() && !a.cfg.PodCIDR.Contains(addr) {
				addrs = append(addrs, addr)
			}
		}
		if len(p.Status.PodIPs) == 0 {
			if addr, err := netip.ParseAddr(p.Status.PodIP); err == nil && addr.Is4() && !a.cfg.PodCIDR.Contains(addr) {
				addrs = append(addrs, addr)
			}
		}
		if len(addrs) == 0 {
			continue
		}
		key := identity.KeyOf(p.Namespace, p.Spec.ServiceAccountName, p.Labels)
		id, ok := identity.Lookup(a.informers.identitiesByHash(key.Hash()), key)
		if !ok {
			unresolved++
			continue
		}
		for _, addr := range addrs {
			pfx := netip.PrefixFrom(addr, 32)
			if have, ok := ids[pfx]; ok && have != id {
				conflict[pfx] = true
			}
			ids[pfx] = id
		}
	}
	for pfx := range conflict {
		delete(ids, pfx)
	}
	return ids, unresolved, nil
}

// syncRedirect writes the services and opted-in network namespaces.
func (a *Agent) syncRedirect() error {
	want := map[netip.AddrPort]bool{}
	svcs, err := a.informers.services.List(everything())
	if err != nil {
		return err
	}
	for _, s := range svcs {
		ips := s.Spec.ClusterIPs
		if len(ips) == 0 && s.Spec.ClusterIP != "" {
			ips = []string{s.Spec.ClusterIP}
		}
		for _, ipStr := range ips {
			ip, err := netip.ParseAddr(ipStr)
			if err != nil || !ip.Is4() {
				continue // "None" (headless) or IPv6
			}
			for _, p := range s.Spec.Ports {
				if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
					want[netip.AddrPortFrom(ip, uint16(p.Port))] = true
				}
			}
		}
	}
	have, err := a.red.Services()
	if err != nil {
		return err
	}
	haveSet := map[netip.AddrPort]bool{}
	for _, s := range have {
		haveSet[s] = true
		if !want[s] {
			if err := a.red.DeleteService(s); err != nil {
				return err
			}
		}
	}
	for s := range want {
		if !haveSet[s] {
			if err := a.red.PutService(s); err != nil {
				return err
			}
		}
	}

	wantNS := map[uint64]bool{}
	for _, r := range a.liveRecords() {
		if r.NetnsCookie != 0 && a.redirected(r) {
			wantNS[r.NetnsCookie] = true
		}
	}
	haveNS, err := a.red.OptedIn()
	if err != nil {
		return err
	}
	haveNSSet := map[uint64]bool{}
	for _, c := range haveNS {
		haveNSSet[c] = true
		if !wantNS[c] {
			if err := a.red.OptOut(c); err != nil {
				return err
			}
		}
	}
	for c := range wantNS {
		if !haveNSSet[c] {
			if err := a.red.OptIn(c); err != nil {
				return err
			}
		}
	}
	a.metrics.services.Set(float64(len(want)))
	a.metrics.optedIn.Set(float64(len(wantNS)))
	return nil
}
