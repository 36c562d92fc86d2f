package translate

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	setfsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/set_filter_state/v3"
	netsetfsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/set_filter_state/v3"

	"github.com/nodemesh/nodemesh/translate/envoy"
)

// conn is a client's connection as the outbound listener sees it: the
// original destination, the application protocol HTTP detection reports
// ("" for none) and the client's address.
type conn struct {
	dst  netip.AddrPort
	alpn string
	src  netip.Addr
}

// selectChain is Envoy's filter chain selection
// (config.listener.v3.FilterChainMatch) over the emitted listener: prune by
// destination port, destination address, server names, transport protocol,
// application protocols, direct source address, source type, source
// address and source port, in that order, each step keeping the chains
// that match most specifically (a chain without the criterion matches
// least specifically). It returns the default chain when none is left and
// fails when several are (Envoy rejects such a listener), or when a chain
// uses a criterion nodemesh does not emit.
func selectChain(l *listenerv3.Listener, c conn) (*listenerv3.FilterChain, error) {
	chains := l.GetFilterChains()
	for _, fc := range chains {
		m := fc.GetFilterChainMatch()
		if len(m.GetServerNames()) > 0 || m.GetTransportProtocol() != "" || len(m.GetDirectSourcePrefixRanges()) > 0 ||
			m.GetSourceType() != listenerv3.FilterChainMatch_ANY || len(m.GetSourcePorts()) > 0 {
			return nil, fmt.Errorf("chain %s: a criterion the evaluator does not read", fc.GetName())
		}
	}
	// score: -1 excluded, else how specifically the chain matches.
	step := func(score func(m *listenerv3.FilterChainMatch) int) {
		best := -1
		scores := make([]int, len(chains))
		for i, fc := range chains {
			scores[i] = score(fc.GetFilterChainMatch())
			best = max(best, scores[i])
		}
		var kept []*listenerv3.FilterChain
		for i, fc := range chains {
			if scores[i] >= 0 && scores[i] == best {
				kept = append(kept, fc)
			}
		}
		chains = kept
	}
	prefixScore := func(ranges []*corev3.CidrRange, a netip.Addr) int {
		if len(ranges) == 0 {
			return 0
		}
		best := -1
		for _, r := range ranges {
			p, err := netip.ParsePrefix(r.GetAddressPrefix() + "/" + strconv.Itoa(int(r.GetPrefixLen().GetValue())))
			if err == nil && p.Contains(a) {
				best = max(best, 1+p.Bits())
			}
		}
		return best
	}
	step(func(m *listenerv3.FilterChainMatch) int {
		switch {
		case m.GetDestinationPort() == nil:
			return 0
		case m.GetDestinationPort().GetValue() == uint32(c.dst.Port()):
			return 1
		}
		return -1
	})
	step(func(m *listenerv3.FilterChainMatch) int { return prefixScore(m.GetPrefixRanges(), c.dst.Addr()) })
	step(func(m *listenerv3.FilterChainMatch) int {
		switch {
		case len(m.GetApplicationProtocols()) == 0:
			return 0
		case c.alpn != "" && contains(m.GetApplicationProtocols(), c.alpn):
			return 1
		}
		return -1
	})
	step(func(m *listenerv3.FilterChainMatch) int { return prefixScore(m.GetSourcePrefixRanges(), c.src) })
	switch len(chains) {
	case 0:
		return l.GetDefaultFilterChain(), nil
	case 1:
		return chains[0], nil
	}
	var names []string
	for _, fc := range chains {
		names = append(names, fc.GetName())
	}
	return nil, fmt.Errorf("several chains match %v: %s", c, strings.Join(names, ", "))
}

// chainIdentity is the client identity a chain stores in filter state for
// the upstream ("" when none), after checking how it stores it: first, as a
// read-only string shared with the upstream once.
func chainIdentity(fc *listenerv3.FilterChain) (string, error) {
	var out string
	for i, f := range fc.GetFilters() {
		var cfg netsetfsv3.Config
		if !f.GetTypedConfig().MessageIs(&cfg) {
			continue
		}
		if err := f.GetTypedConfig().UnmarshalTo(&cfg); err != nil {
			return "", err
		}
		if i != 0 || len(cfg.GetOnNewConnection()) != 1 {
			return "", fmt.Errorf("chain %s: set_filter_state is not first or sets several values", fc.GetName())
		}
		v := cfg.GetOnNewConnection()[0]
		if v.GetObjectKey() != envoy.ClientIdentityKey || v.GetFactoryKey() != "envoy.string" || !v.GetReadOnly() || v.GetSharedWithUpstream() != setfsv3.FilterStateValue_ONCE {
			return "", fmt.Errorf("chain %s: filter state %v", fc.GetName(), v)
		}
		out = v.GetFormatString().GetTextFormatSource().GetInlineString()
		if strings.Contains(out, "%") {
			return "", fmt.Errorf("chain %s: identity %q is not a literal", fc.GetName(), out)
		}
	}
	return out, nil
}

// clientIdentity is the identity the listener decides for a connection.
func clientIdentity(l *listenerv3.Listener, c conn) (string, error) {
	fc, err := selectChain(l, c)
	if err != nil {
		return "", err
	}
	return chainIdentity(fc)
}

func listenerOf(t *testing.T, r *Resources) *listenerv3.Listener {
	t.Helper()
	if len(r.Listeners) != 1 {
		t.Fatalf("%d listeners, want 1", len(r.Listeners))
	}
	return r.Listeners[0]
}

// clusterPort is the port of an outbound|PORT|SUBSET|HOST cluster.
func clusterPort(t *testing.T, name string) uint16 {
	t.Helper()
	parts := strings.Split(name, "|")
	p, err := strconv.ParseUint(parts[min(1, len(parts)-1)], 10, 16)
	if len(parts) != 4 || err != nil {
		t.Fatalf("cluster %q is not outbound|PORT|SUBSET|HOST", name)
	}
	return uint16(p)
}
