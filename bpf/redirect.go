//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/nodemesh/nodemesh/api"
)

// Ports and marks the redirection honours, as Istio uses them.
const (
	// ProxyOutboundPort is the node proxy's outbound capture listener.
	ProxyOutboundPort = api.OutboundCapturePort
	// HBONEPort is never redirected.
	HBONEPort = api.HBONEPort
	// IstioProxyUID is the UID (and GID) of Istio proxies; their connections
	// are never redirected.
	IstioProxyUID = api.IstioProxyUID
	// IstioSkipMark on a socket (SO_MARK) keeps it from being redirected.
	IstioSkipMark = api.IstioSkipMark
)

// Redirect is the loaded redirection programs and their maps. Its methods are
// safe for concurrent use.
type Redirect struct {
	objs redirectObjects
}

// redirectConfig, netnsConfig and serviceKey mirror struct redirect_config,
// struct netns_config and struct service_key in c/redirect.c.
type redirectConfig struct {
	ProxyIP   [4]byte
	ProxyPort uint16
	Pad       uint16
}

type netnsConfig struct {
	Flags uint32
}

type serviceKey struct {
	IP   [4]byte
	Port uint16
	Pad  uint16
}

// LoadRedirect loads the redirection programs and maps into the kernel.
// Nothing is redirected before SetProxy, OptIn and PutService.
func LoadRedirect(opts LoadOptions) (*Redirect, error) {
	spec, err := loadRedirect()
	if err != nil {
		return nil, fmt.Errorf("load redirect spec: %w", err)
	}
	r := &Redirect{}
	if err := loadCollection(spec, &r.objs, opts); err != nil {
		return nil, fmt.Errorf("load redirect programs: %w", err)
	}
	return r, nil
}

// Close releases the programs and maps. Attachments and pins keep what they
// reference alive.
func (r *Redirect) Close() error {
	return r.objs.Close()
}

// SetProxy sets the address redirected connections go to: the node proxy's
// outbound listener (node IP, port ProxyOutboundPort). The proxy must listen
// on an IPv4 socket for SO_ORIGINAL_DST to be answered.
func (r *Redirect) SetProxy(addr netip.AddrPort) error {
	if !addr.Addr().Is4() {
		return fmt.Errorf("proxy address %s: %w", addr, ErrNotIPv4)
	}
	if addr.Port() == 0 {
		return fmt.Errorf("proxy address %s: no port", addr)
	}
	cfg := redirectConfig{ProxyIP: addr.Addr().As4(), ProxyPort: addr.Port()}
	if err := r.objs.NmRedirCfg.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("set proxy address %s: %w", addr, err)
	}
	return nil
}

// OptIn redirects the connections of sockets in the network namespace with
// this cookie (see NetnsCookie). The agent opts in each pod of an opted-in
// namespace, and never one with an Istio sidecar or labelled
// istio.io/dataplane-mode=none. The change applies to the next connect().
func (r *Redirect) OptIn(netnsCookie uint64) error {
	if err := r.objs.NmNetns.Put(netnsCookie, &netnsConfig{}); err != nil {
		return fmt.Errorf("opt in netns %d: %w", netnsCookie, err)
	}
	return nil
}

// OptOut stops redirecting new connections of that network namespace.
// Connections already made through the proxy stay as they are. Opting out a
// namespace that is not opted in is not an error.
func (r *Redirect) OptOut(netnsCookie uint64) error {
	if err := r.objs.NmNetns.Delete(netnsCookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("opt out netns %d: %w", netnsCookie, err)
	}
	return nil
}

func serviceKeyOf(addr netip.AddrPort) (serviceKey, error) {
	if !addr.Addr().Is4() {
		return serviceKey{}, fmt.Errorf("service %s: %w", addr, ErrNotIPv4)
	}
	return serviceKey{IP: addr.Addr().As4(), Port: addr.Port()}, nil
}

// PutService makes connections to addr (a Service VIP and port) redirected.
// Port 0 stands for every port of the address.
func (r *Redirect) PutService(addr netip.AddrPort) error {
	k, err := serviceKeyOf(addr)
	if err != nil {
		return err
	}
	if err := r.objs.NmServices.Put(&k, uint32(0)); err != nil {
		return fmt.Errorf("put service %s: %w", addr, err)
	}
	return nil
}

// DeleteService stops redirecting connections to addr. Deleting a service
// that is not there is not an error.
func (r *Redirect) DeleteService(addr netip.AddrPort) error {
	k, err := serviceKeyOf(addr)
	if err != nil {
		return err
	}
	if err := r.objs.NmServices.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete service %s: %w", addr, err)
	}
	return nil
}

// Counters returns the per-reason counts since the counter map was created,
// summed over CPUs.
func (r *Redirect) Counters() (RedirectCounters, error) {
	var out RedirectCounters
	var perCPU []uint64
	for reason := range NumRedirectReasons {
		if err := r.objs.NmRedirStats.Lookup(uint32(reason), &perCPU); err != nil {
			return RedirectCounters{}, fmt.Errorf("read redirect counter %s: %w", reason, err)
		}
		for _, c := range perCPU {
			out[reason] += c
		}
	}
	return out, nil
}
