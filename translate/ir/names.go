package ir

import (
	"strconv"
	"strings"

	"github.com/nodemesh/nodemesh/api"
)

// Well-known names shared with Istio so that Istio users and tools recognise
// them (istioctl proxy-config, dashboards keyed on cluster names).
const (
	// OutboundListenerName is the capture listener on OutboundCapturePort.
	OutboundListenerName = "virtualOutbound"
	// OutboundCapturePort is where the node agent redirects opted-in traffic.
	OutboundCapturePort = api.OutboundCapturePort

	// InboundListenerName is the listener on InboundCapturePort that
	// receives the connections the agent captures to pods whose
	// authorization needs HTTP facts: Istio's name for a sidecar's inbound
	// listener, as the outbound one keeps Istio's virtualOutbound.
	InboundListenerName = "virtualInbound"
	// InboundCapturePort is where those connections are assigned.
	InboundCapturePort = api.InboundCapturePort

	PassthroughCluster = "PassthroughCluster"
	BlackHoleCluster   = "BlackHoleCluster"

	// AllowAnyVirtualHost catches hosts that no Service claims and sends them
	// to PassthroughCluster (Istio's outboundTrafficPolicy ALLOW_ANY).
	AllowAnyVirtualHost = "allow_any"
	// BlockAllVirtualHost replaces it under outboundTrafficPolicy
	// REGISTRY_ONLY: unknown hosts get a 502 (Istio's util.BlackHole).
	BlockAllVirtualHost = "block_all"

	// DefaultRouteName names the route generated for a Service without a
	// VirtualService.
	DefaultRouteName = "default"

	PassthroughFilterChain = "PassthroughFilterChain"
	BlackHoleFilterChain   = "virtualOutbound-blackhole"

	// DefaultClusterDomain is the Kubernetes cluster domain used in FQDNs.
	DefaultClusterDomain = "cluster.local"
)

// ServiceFQDN is the fully qualified host name of a Kubernetes Service.
func ServiceFQDN(name, namespace, clusterDomain string) string {
	if clusterDomain == "" {
		clusterDomain = DefaultClusterDomain
	}
	return name + "." + namespace + ".svc." + clusterDomain
}

// OutboundClusterName is Istio's BuildSubsetKey for outbound traffic:
// outbound|<port>|<subset>|<fqdn>.
func OutboundClusterName(port uint32, subset, fqdn string) string {
	var b strings.Builder
	b.Grow(len("outbound|") + 6 + len(subset) + len(fqdn) + 2)
	b.WriteString("outbound|")
	b.WriteString(strconv.FormatUint(uint64(port), 10))
	b.WriteByte('|')
	b.WriteString(subset)
	b.WriteByte('|')
	b.WriteString(fqdn)
	return b.String()
}

// ParseOutboundClusterName splits a name built by OutboundClusterName.
// It does not allocate: it runs inside sort comparisons.
func ParseOutboundClusterName(name string) (port uint32, subset, fqdn string, ok bool) {
	rest, found := strings.CutPrefix(name, "outbound|")
	if !found {
		return 0, "", "", false
	}
	portStr, rest, found := strings.Cut(rest, "|")
	if !found {
		return 0, "", "", false
	}
	subset, fqdn, found = strings.Cut(rest, "|")
	if !found {
		return 0, "", "", false
	}
	p, err := strconv.ParseUint(portStr, 10, 32)
	if err != nil {
		return 0, "", "", false
	}
	return uint32(p), subset, fqdn, true
}

// RouteConfigName is the RDS name for HTTP traffic to a destination port:
// the port number, as Istio names sidecar outbound route configurations.
func RouteConfigName(port uint32) string {
	return strconv.FormatUint(uint64(port), 10)
}

// VirtualHostName is <fqdn>:<port>.
func VirtualHostName(host string, port uint32) string {
	return host + ":" + strconv.FormatUint(uint64(port), 10)
}

// HTTPFilterChainName names the filter chain that sends HTTP traffic for a
// port to its route configuration; it mirrors Istio's 0.0.0.0_<port> listener.
func HTTPFilterChainName(port uint32) string {
	return "0.0.0.0_" + strconv.FormatUint(uint64(port), 10)
}

// TCPFilterChainName names the filter chain for one Service address and port;
// it mirrors Istio's <ClusterIP>_<port> listener.
func TCPFilterChainName(address string, port uint32) string {
	return address + "_" + strconv.FormatUint(uint64(port), 10)
}

// SniffedHTTPFilterChainName names the HTTP half of a protocol-sniffed port.
func SniffedHTTPFilterChainName(address string, port uint32) string {
	return TCPFilterChainName(address, port) + "-http"
}

// HTTPStatPrefix is the HTTP connection manager's stat prefix.
func HTTPStatPrefix(port uint32) string {
	return "outbound_" + HTTPFilterChainName(port)
}

// ConfigPath is the value of filter_metadata.istio.config: the API path of
// the Istio resource a route or cluster came from. Istio always writes the v1
// path, whatever version the resource was written in.
func ConfigPath(kind, namespace, name string) string {
	var plural string
	switch kind {
	case "VirtualService":
		plural = "virtual-service"
	case "DestinationRule":
		plural = "destination-rule"
	case "ServiceEntry":
		plural = "service-entry"
	default:
		plural = strings.ToLower(kind)
	}
	return "/apis/networking.istio.io/v1/namespaces/" + namespace + "/" + plural + "/" + name
}

// ParseConfigPath is the inverse of ConfigPath.
func ParseConfigPath(path string) (ResourceRef, bool) {
	rest, ok := strings.CutPrefix(path, "/apis/networking.istio.io/v1/namespaces/")
	if !ok {
		return ResourceRef{}, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return ResourceRef{}, false
	}
	var kind string
	switch parts[1] {
	case "virtual-service":
		kind = "VirtualService"
	case "destination-rule":
		kind = "DestinationRule"
	case "service-entry":
		kind = "ServiceEntry"
	default:
		return ResourceRef{}, false
	}
	return ResourceRef{Kind: kind, Namespace: parts[0], Name: parts[2]}, true
}

// TraceOperation is the decorator operation Istio gives a route with a single
// destination: <host>:<port><path>.
func TraceOperation(host string, port uint32, path string) string {
	return host + ":" + strconv.FormatUint(uint64(port), 10) + path
}

// IstioMTLSSNI is Istio's SNI for ISTIO_MUTUAL (model.BuildDNSSrvSubsetKey):
// outbound_.<port>_.<subset>_.<fqdn>.
func IstioMTLSSNI(port uint32, subset, fqdn string) string {
	return "outbound_." + strconv.FormatUint(uint64(port), 10) + "_." + subset + "_." + fqdn
}

// SPIFFEID is Istio's workload identity: spiffe://<trust domain>/ns/<ns>/sa/<sa>.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// DefaultTrustDomain is Istio's default trust domain.
const DefaultTrustDomain = "cluster.local"

// IdentityFilterChainName names a chain's copy for the clients of one
// workload identity (Istio mTLS).
func IdentityFilterChainName(chain, spiffe string) string { return chain + "@" + spiffe }
