package mapsync

import (
	"fmt"
	"net/netip"

	"github.com/nodemesh/nodemesh/bpf"
)

// Reader lists what the maps hold.
type Reader interface {
	Identities() (map[netip.Prefix]bpf.Identity, error)
	Policies() (map[bpf.PolicyKey]bpf.Verdict, error)
	PortRanges() (map[bpf.PortRangeKey]bpf.Verdict, error)
	Endpoints() (map[int]bpf.Endpoint, error)
	LocalEndpoints() (map[[4]byte]bpf.Endpoint, map[[4]byte]uint64, error)
}

// Writer writes the maps, one entry (or one batch of policy entries) per
// call.
type Writer interface {
	PutIdentity(prefix netip.Prefix, id bpf.Identity) error
	DeleteIdentity(prefix netip.Prefix) error
	PutPolicies(keys []bpf.PolicyKey, verdicts []bpf.Verdict) error
	DeletePolicies(keys []bpf.PolicyKey) error
	PutPortRanges(keys []bpf.PortRangeKey, verdicts []bpf.Verdict) error
	DeletePortRanges(keys []bpf.PortRangeKey) error
	PutEndpoint(ifindex int, ep bpf.Endpoint) error
	DeleteEndpoint(ifindex int) error
	PutLocalEndpoint(ep bpf.Endpoint, netnsCookie uint64) error
	DeleteLocalEndpoint(ip [4]byte) error
}

// Maps is what the plan is read from and applied to.
type Maps interface {
	Reader
	Writer
}

var _ Maps = (*bpf.Policy)(nil)

// LocalEndpoint is an entry of the local-endpoints map: the endpoint of a
// local pod by address, for the redirection programs (the node proxy's
// upstream connections from that address get the pod's egress policy),
// with its network namespace's cookie.
type LocalEndpoint struct {
	Endpoint    bpf.Endpoint
	NetnsCookie uint64
}

// State is what the maps hold.
type State struct {
	Identities     map[netip.Prefix]bpf.Identity
	Policies       map[bpf.PolicyKey]bpf.Verdict
	Ranges         map[bpf.PortRangeKey]bpf.Verdict
	Endpoints      map[int]bpf.Endpoint
	LocalEndpoints map[[4]byte]LocalEndpoint
}

// Read lists the maps.
func Read(r Reader) (State, error) {
	var s State
	var err error
	if s.Identities, err = r.Identities(); err != nil {
		return State{}, fmt.Errorf("read the identity map: %w", err)
	}
	if s.Policies, err = r.Policies(); err != nil {
		return State{}, fmt.Errorf("read the policy map: %w", err)
	}
	if s.Ranges, err = r.PortRanges(); err != nil {
		return State{}, fmt.Errorf("read the port range map: %w", err)
	}
	if s.Endpoints, err = r.Endpoints(); err != nil {
		return State{}, fmt.Errorf("read the endpoint map: %w", err)
	}
	eps, cookies, err := r.LocalEndpoints()
	if err != nil {
		return State{}, fmt.Errorf("read the local endpoint map: %w", err)
	}
	s.LocalEndpoints = make(map[[4]byte]LocalEndpoint, len(eps))
	for ip, ep := range eps {
		s.LocalEndpoints[ip] = LocalEndpoint{Endpoint: ep, NetnsCookie: cookies[ip]}
	}
	return s, nil
}

// Pod is a local pod as the maps should know it: its endpoint (by the
// ifindex of its host-side veth) and its local endpoint (by address).
type Pod struct {
	Ifindex     int
	IP          [4]byte
	Identity    bpf.Identity
	Flags       bpf.EndpointFlags
	NetnsCookie uint64
}

// Want is the content the maps should reach. Endpoints' policy revisions
// are the plan's to choose (NewPlan).
type Want struct {
	Identities map[netip.Prefix]bpf.Identity
	Policies   map[bpf.PolicyKey]bpf.Verdict
	// Ranges must be normalized (bpf.NormalizeRanges): no allow block
	// inside a deny block of its group. Then, as in the hash, adding a deny
	// or removing an allow only restricts and the reverse only relaxes,
	// which is what the plan's order relies on.
	Ranges map[bpf.PortRangeKey]bpf.Verdict
	Pods   []Pod
}
