package istio

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// portProtocol is Istio's protocol selection for a Service port; the rule
// lives in translate/authz so that the inbound capture (which the agent
// runs too) selects protocols exactly as the outbound listener does.
func portProtocol(p corev1.ServicePort) ir.Protocol { return authz.PortProtocol(p) }

// PortProtocol is the protocol Istio selects for a Service port (appProtocol,
// then the port name; Unknown when it would sniff).
func PortProtocol(p corev1.ServicePort) ir.Protocol { return portProtocol(p) }
