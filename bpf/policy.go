//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Policy is the loaded policy programs and their maps. Its methods are safe
// for concurrent use (every call is one or a few map syscalls).
type Policy struct {
	objs policyObjects
}

// EndpointFlags say in which directions an endpoint is isolated.
type EndpointFlags uint32

const (
	// EnforceIngress: the pod is selected by some policy for ingress, so a new
	// incoming flow that no Allow entry matches is dropped.
	EnforceIngress EndpointFlags = 1 << 0
	// EnforceEgress: the same for flows the pod opens.
	EnforceEgress EndpointFlags = 1 << 1
)

// Endpoint is the value of the endpoints map, keyed by the ifindex of the
// pod's host-side veth. Layout matches struct endpoint in c/policy.c.
type Endpoint struct {
	// IP is the pod's IPv4 address (netip.Addr.As4); packets leaving the pod
	// with another source address are dropped.
	IP [4]byte
	// Identity is the pod's own identity: the Endpoint field of the policy
	// keys that apply to it.
	Identity Identity
	// Flags select default deny per direction.
	Flags EndpointFlags
	// PolicyRevision is compared with the revision stored in each conntrack
	// entry: change it after changing the endpoint's policy entries and the
	// endpoint's established flows are decided again on their next packet.
	// Without a change only new flows see new entries.
	PolicyRevision uint32
}

// PolicyKey is the key of the policy map. Layout matches struct policy_key in
// c/policy.c.
type PolicyKey struct {
	// Endpoint is the identity of the endpoints the entry applies to
	// (Endpoint.Identity).
	Endpoint Identity
	// Peer is the identity of the other side; IdentityAny matches all.
	Peer Identity
	// Port is the flow's destination port: the pod's port for Ingress, the
	// peer's for Egress. 0 matches every port (and is the only port that
	// matches ICMP or other port-less protocols).
	Port uint16
	// Proto is the IP protocol (ProtoTCP, ...); ProtoAny matches all.
	Proto uint8
	Dir   Direction
}

type ipcacheKey struct {
	Prefixlen uint32
	Addr      [4]byte
}

// LoadPolicy loads the policy programs and maps into the kernel.
func LoadPolicy(opts LoadOptions) (*Policy, error) {
	spec, err := loadPolicy()
	if err != nil {
		return nil, fmt.Errorf("load policy spec: %w", err)
	}
	if d := opts.ConntrackTCPLifetime; d > 0 {
		if err := spec.Variables[policyVarCtLifetimeTcpNs].Set(uint64(d.Nanoseconds())); err != nil {
			return nil, fmt.Errorf("set conntrack TCP lifetime: %w", err)
		}
	}
	if d := opts.ConntrackOtherLifetime; d > 0 {
		if err := spec.Variables[policyVarCtLifetimeOtherNs].Set(uint64(d.Nanoseconds())); err != nil {
			return nil, fmt.Errorf("set conntrack lifetime: %w", err)
		}
	}
	p := &Policy{}
	if err := loadCollection(spec, &p.objs, opts); err != nil {
		return nil, fmt.Errorf("load policy programs: %w", err)
	}
	return p, nil
}

// Close releases the programs and maps. Attachments and pins keep what they
// reference alive.
func (p *Policy) Close() error {
	return p.objs.Close()
}

// Program returns the program that enforces dir: for Egress the one for the
// host-side veth's ingress hook (from the pod), for Ingress the one for its
// egress hook (to the pod).
func (p *Policy) Program(dir Direction) *ebpf.Program {
	if dir == Egress {
		return p.objs.FromPod
	}
	return p.objs.ToPod
}

// localEndpoint is the value of nm_local_eps. Layout matches struct local_ep
// in c/policy_maps.h.
type localEndpoint struct {
	Endpoint    Endpoint
	NetnsCookie uint64
}

// PutLocalEndpoint records a local pod by address, with its network
// namespace's cookie: the redirection programs apply the pod's egress
// policy to the node proxy's upstream connections bound to its address
// (LoadPolicy and LoadRedirect must share a pin directory for that).
func (p *Policy) PutLocalEndpoint(ep Endpoint, netnsCookie uint64) error {
	if err := p.objs.NmLocalEps.Put(ep.IP, &localEndpoint{Endpoint: ep, NetnsCookie: netnsCookie}); err != nil {
		return fmt.Errorf("put local endpoint %v: %w", netip.AddrFrom4(ep.IP), err)
	}
	return nil
}

// DeleteLocalEndpoint removes the local pod of an address; a missing one is
// fine.
func (p *Policy) DeleteLocalEndpoint(ip [4]byte) error {
	if err := p.objs.NmLocalEps.Delete(ip); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete local endpoint %v: %w", netip.AddrFrom4(ip), err)
	}
	return nil
}

// LocalEndpoints lists nm_local_eps: endpoint and netns cookie by address.
func (p *Policy) LocalEndpoints() (map[[4]byte]Endpoint, map[[4]byte]uint64, error) {
	eps, cookies := map[[4]byte]Endpoint{}, map[[4]byte]uint64{}
	var (
		k [4]byte
		v localEndpoint
	)
	it := p.objs.NmLocalEps.Iterate()
	for it.Next(&k, &v) {
		eps[k], cookies[k] = v.Endpoint, v.NetnsCookie
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("list local endpoints: %w", err)
	}
	return eps, cookies, nil
}

// proxyConfig is the value of nm_proxy_cfg. Layout matches struct proxy_cfg
// in c/policy.c.
type proxyConfig struct {
	PodNet, PodMask [4]byte
	Mark            uint32
	Enabled         uint32
}

// SetProxyReturn turns on the node-proxy return path for replies to
// addresses of podCIDR: from_pod (for a reply of a flow opened towards its
// pod) and from_uplink hand a TCP packet whose tuple a socket of the node's
// network namespace owns — the node proxy's transparent upstream socket,
// bound to a local client's address — to that socket, and set mark on it,
// for a policy routing rule to deliver it locally. An invalid podCIDR turns
// the return path off.
func (p *Policy) SetProxyReturn(podCIDR netip.Prefix, mark uint32) error {
	var c proxyConfig
	if podCIDR.IsValid() && podCIDR.Addr().Is4() {
		podCIDR = podCIDR.Masked()
		c.PodNet = podCIDR.Addr().As4()
		mask := net.CIDRMask(podCIDR.Bits(), 32)
		copy(c.PodMask[:], mask)
		c.Mark, c.Enabled = mark, 1
	}
	if err := p.objs.NmProxyCfg.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write the proxy return configuration: %w", err)
	}
	return nil
}

// AttachUplink attaches from_uplink to the ingress hook of the node's
// uplink ifindex (resolved in the calling thread's network namespace): the
// node-proxy return path for replies from other nodes (SetProxyReturn).
// Options as for AttachTC.
func (p *Policy) AttachUplink(ifindex int, opts AttachOptions) (*TCAttachment, error) {
	return AttachTC(p.objs.FromUplink, ifindex, Egress, opts)
}

// Attach attaches the program enforcing dir to the host-side veth ifindex
// (resolved in the calling thread's network namespace). See AttachTC.
func (p *Policy) Attach(ifindex int, dir Direction, opts AttachOptions) (*TCAttachment, error) {
	return AttachTC(p.Program(dir), ifindex, dir, opts)
}

// PutEndpoint creates or replaces the endpoint of host-side veth ifindex.
// Until an interface has an endpoint, the programs drop its IPv4 packets.
func (p *Policy) PutEndpoint(ifindex int, ep Endpoint) error {
	if err := p.objs.NmEndpoints.Put(uint32(ifindex), &ep); err != nil {
		return fmt.Errorf("put endpoint for ifindex %d: %w", ifindex, err)
	}
	return nil
}

// Endpoint returns the endpoint of ifindex; the error wraps
// ebpf.ErrKeyNotExist when there is none.
func (p *Policy) Endpoint(ifindex int) (Endpoint, error) {
	var ep Endpoint
	if err := p.objs.NmEndpoints.Lookup(uint32(ifindex), &ep); err != nil {
		return Endpoint{}, fmt.Errorf("look up endpoint for ifindex %d: %w", ifindex, err)
	}
	return ep, nil
}

// DeleteEndpoint removes the endpoint of ifindex and its conntrack entries.
// Deleting an endpoint that does not exist is not an error.
func (p *Policy) DeleteEndpoint(ifindex int) error {
	if err := p.objs.NmEndpoints.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete endpoint for ifindex %d: %w", ifindex, err)
	}
	if _, err := p.FlushConntrack(ifindex); err != nil {
		return err
	}
	return nil
}

func ipcacheKeyOf(prefix netip.Prefix) (ipcacheKey, error) {
	if !prefix.IsValid() || !prefix.Addr().Is4() {
		return ipcacheKey{}, fmt.Errorf("identity prefix %s: %w", prefix, ErrNotIPv4)
	}
	prefix = prefix.Masked()
	return ipcacheKey{Prefixlen: uint32(prefix.Bits()), Addr: prefix.Addr().As4()}, nil
}

// PutIdentity maps an IPv4 prefix to an identity: /32 for a pod or a node
// address, shorter prefixes for CIDR peers. The longest matching prefix wins,
// so an "except" block is a longer prefix mapped to another identity
// (IdentityWorld, for instance).
func (p *Policy) PutIdentity(prefix netip.Prefix, id Identity) error {
	k, err := ipcacheKeyOf(prefix)
	if err != nil {
		return err
	}
	if err := p.objs.NmIpcache.Put(&k, uint32(id)); err != nil {
		return fmt.Errorf("put identity %d for %s: %w", id, prefix, err)
	}
	return nil
}

// DeleteIdentity removes the entry for exactly prefix. Deleting a prefix that
// has no entry is not an error.
func (p *Policy) DeleteIdentity(prefix netip.Prefix) error {
	k, err := ipcacheKeyOf(prefix)
	if err != nil {
		return err
	}
	if err := p.objs.NmIpcache.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete identity of %s: %w", prefix, err)
	}
	return nil
}

// PutPolicy creates or replaces one policy entry.
func (p *Policy) PutPolicy(k PolicyKey, v Verdict) error {
	if err := p.objs.NmPolicy.Put(&k, uint32(v)); err != nil {
		return fmt.Errorf("put policy %+v: %w", k, err)
	}
	return nil
}

// DeletePolicy removes one policy entry. Deleting an entry that does not
// exist is not an error.
func (p *Policy) DeletePolicy(k PolicyKey) error {
	if err := p.objs.NmPolicy.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete policy %+v: %w", k, err)
	}
	return nil
}

// PutPolicies creates or replaces many entries in one batch syscall;
// verdicts[i] is the verdict of keys[i].
func (p *Policy) PutPolicies(keys []PolicyKey, verdicts []Verdict) error {
	if len(keys) != len(verdicts) {
		return fmt.Errorf("put policies: %d keys but %d verdicts", len(keys), len(verdicts))
	}
	if len(keys) == 0 {
		return nil
	}
	if _, err := p.objs.NmPolicy.BatchUpdate(keys, verdicts, nil); err != nil {
		return fmt.Errorf("put %d policies: %w", len(keys), err)
	}
	return nil
}

// DeletePolicies removes many entries, ignoring those that do not exist.
func (p *Policy) DeletePolicies(keys []PolicyKey) error {
	for _, k := range keys {
		if err := p.DeletePolicy(k); err != nil {
			return err
		}
	}
	return nil
}

// Counters returns the per-direction, per-reason packet and byte counts since
// the counter map was created, summed over CPUs.
func (p *Policy) Counters() (PolicyCounters, error) {
	var out PolicyCounters
	var perCPU []Count
	for dir := range 2 {
		for r := range NumReasons {
			idx := uint32(dir*reasonSlots) + uint32(r)
			if err := p.objs.NmPolStats.Lookup(idx, &perCPU); err != nil {
				return PolicyCounters{}, fmt.Errorf("read policy counter %s/%s: %w", Direction(dir), r, err)
			}
			for _, c := range perCPU {
				out[dir][r].Packets += c.Packets
				out[dir][r].Bytes += c.Bytes
			}
		}
	}
	return out, nil
}
