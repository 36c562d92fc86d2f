package istio

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// protocolNames maps Istio's protocol names (lower case) to protocols.
var protocolNames = map[string]ir.Protocol{
	"http":     ir.ProtocolHTTP,
	"http2":    ir.ProtocolHTTP2,
	"grpc":     ir.ProtocolGRPC,
	"grpc-web": ir.ProtocolGRPCWeb,
	"tcp":      ir.ProtocolTCP,
	"tls":      ir.ProtocolTLS,
	"https":    ir.ProtocolHTTPS,
	"mongo":    ir.ProtocolMongo,
	"mysql":    ir.ProtocolMySQL,
	"redis":    ir.ProtocolRedis,
	"udp":      ir.ProtocolUDP,
}

// appProtocols are the Kubernetes-standard appProtocol values Istio knows.
var appProtocols = map[string]ir.Protocol{
	"kubernetes.io/h2c": ir.ProtocolHTTP2,
	"kubernetes.io/ws":  ir.ProtocolHTTP,
	"kubernetes.io/wss": ir.ProtocolHTTPS,
}

// portProtocol is Istio's protocol selection for a Service port
// (pilot/pkg/serviceregistry/kube: ConvertProtocol): the L4 protocol first,
// (UDP and SCTP are not proxied), then appProtocol, then the port name — "http" or "http-<suffix>" — and
// otherwise protocol sniffing (Unknown).
func portProtocol(p corev1.ServicePort) ir.Protocol {
	if p.Protocol == corev1.ProtocolUDP || p.Protocol == corev1.ProtocolSCTP {
		return ir.ProtocolUDP
	}
	if p.AppProtocol != nil && *p.AppProtocol != "" {
		ap := strings.ToLower(*p.AppProtocol)
		if pr, ok := appProtocols[ap]; ok {
			return pr
		}
		if pr, ok := protocolNames[ap]; ok {
			return pr
		}
	}
	name := strings.ToLower(p.Name)
	if pr, ok := protocolNames[name]; ok {
		return pr
	}
	if i := strings.IndexByte(name, '-'); i > 0 {
		if pr, ok := protocolNames[name[:i]]; ok {
			return pr
		}
	}
	return ir.ProtocolUnknown
}

// PortProtocol is the protocol Istio selects for a Service port (appProtocol,
// then the port name; Unknown when it would sniff).
func PortProtocol(p corev1.ServicePort) ir.Protocol { return portProtocol(p) }
