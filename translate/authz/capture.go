package authz

import (
	"cmp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Which inbound traffic the node Envoy sees (docs/design/policy.md §7.2).
// HTTP facts of an AuthorizationPolicy (methods, paths, headers, request
// principals…) can only be judged by an Envoy on the destination side, so
// connections to the HTTP ports of a pod that such a policy applies to are
// captured (bpf_sk_assign) into the node Envoy's inbound listener; the rest
// stays in eBPF, whose projection is Istio's TCP semantics. The controller
// (which builds one filter chain per captured port) and the agent (which
// captures) must agree exactly — a port captured without a chain is closed,
// a chain without capture is never used and its HTTP rules fall back to the
// L4 projection — so both call this one decision.

// Workload is what the capture decision reads of a pod.
type Workload struct {
	Namespace   string
	Labels      map[string]string
	HostNetwork bool
	// Sidecar: the pod has Istio's proxy (its sidecar authorizes it).
	Sidecar bool
	// NamedPorts are its containers' named ports, what a Service's named
	// targetPort resolves to.
	NamedPorts []NamedPort
}

// NamedPort is a named container port.
type NamedPort struct {
	Name string
	Port int32
}

// Meshed reports whether nodemesh authorizes a pod's inbound traffic: no
// sidecar, not on the host network, not opted out, in a namespace labelled
// istio.io/dataplane-mode=nodemesh that is not still injected with
// sidecars. It is the agent's redirected() rule.
func Meshed(w Workload, nsLabels map[string]string) bool {
	switch {
	case w.Sidecar, w.HostNetwork, w.Labels[api.DataplaneModeLabel] == api.DataplaneModeNone,
		nsLabels[api.DataplaneModeLabel] != api.DataplaneModeNodemesh,
		nsLabels[api.IstioInjectionLabel] == api.IstioInjectionEnabled, nsLabels[api.IstioRevisionLabel] != "":
		return false
	}
	return true
}

// CapturedPort is a container port whose connections go to the node
// Envoy's inbound listener.
type CapturedPort struct {
	Port uint32
	// Protocol is Istio's protocol selection for it (HTTP, HTTP2, GRPC or
	// GRPC-Web); TCP for a port captured only for mTLS termination (the
	// node Envoy proxies its bytes).
	Protocol ir.Protocol
	// MTLS is the mode the node Envoy terminates Istio mTLS on the port
	// with (STRICT: only mTLS; PERMISSIVE: mTLS or plaintext); "" none
	// (Capture.WithMTLS).
	MTLS MTLSMode
	// MTLSOnly: the port is captured only to terminate mTLS — no policy
	// with HTTP facts needs it. The node Envoy enforces no authorization
	// on it, so the agent's authorization gate keeps deciding it at L4
	// (the Envoy's upstream connection carries the client's address).
	MTLSOnly bool
}

// Capture decides, for pods, which of their ports the node Envoy's inbound
// listener captures. Build it once for a state of the cluster (policies and
// Services); Ports is then cheap per pod: policies without an HTTP fact are
// dropped here, Services are indexed by namespace.
type Capture struct {
	// l7 are the authorization policies with a rule that has an HTTP fact.
	l7       []selector
	services map[string][]*corev1.Service
	// mtls is the inbound mTLS termination decision (WithMTLS; nil: off).
	mtls *mtlsState
}

// selector says whether a policy applies to a pod.
type selector struct {
	p       *ir.Policy
	applies func(namespace string, podLabels map[string]string) bool
}

// NewCapture prepares the decision for the given authorization policies (of
// any action, dry-run included) and Services. pols must not change while
// the Capture is used.
func NewCapture(pols []ir.Policy, services []*corev1.Service) *Capture {
	c := &Capture{services: map[string][]*corev1.Service{}}
	for _, s := range services {
		c.services[s.Namespace] = append(c.services[s.Namespace], s)
	}
	for i := range pols {
		p := &pols[i]
		if p.Gate != ir.GateAuthorization || !hasL7Rule(p) {
			continue
		}
		c.l7 = append(c.l7, selector{p: p, applies: Applies(p, services)})
	}
	return c
}

// WithAuthn adds RequestAuthentications' scopes to the decision: a pod a
// RequestAuthentication applies to has its HTTP ports captured too — the
// node Envoy's jwt_authn rejects requests with invalid tokens (401), as a
// sidecar does, even when no authorization policy needs HTTP facts. It
// returns c.
func (c *Capture) WithAuthn(scopes []ir.PolicyScope, services []*corev1.Service) *Capture {
	for _, sc := range scopes {
		p := &ir.Policy{Scope: sc, Gate: ir.GateAuthorization}
		c.l7 = append(c.l7, selector{p: p, applies: Applies(p, services)})
	}
	return c
}

func hasL7Rule(p *ir.Policy) bool {
	for i := range p.Rules {
		if p.Rules[i].Layer() == ir.LayerL7 {
			return true
		}
	}
	return false
}

// Ports are the ports of a pod the node Envoy captures, sorted: none unless
// the pod is Meshed and an authorization policy with an HTTP fact applies to
// it; then the container ports that the Services selecting it serve as HTTP
// (Istio's protocol selection: appProtocol, then the port name), resolved
// through targetPort (named targetPorts included). A port that one Service
// declares HTTP and another declares otherwise (TCP, unnamed, …) is not
// captured: a non-HTTP client must not be cut off by an HTTP connection
// manager, and the L4 projection on it denies more, never less.
//
// With WithMTLS, the ports sidecar clients may send Istio mTLS to are
// captured too (mtls.go), with the pod's effective PeerAuthentication
// mode: an HTTP port captured above keeps its protocol (the TLS chain runs
// the same connection manager), any other is MTLSOnly (TCP).
func (c *Capture) Ports(w Workload, nsLabels map[string]string) []CapturedPort {
	if !Meshed(w, nsLabels) {
		return nil
	}
	mtls := c.mtlsPorts(w)
	if !c.l7Applies(w) {
		return mtlsOnly(mtls, nil)
	}
	type use struct {
		http, other bool
		proto       ir.Protocol // the least HTTP protocol named (deterministic whatever the Services' order)
	}
	byPort := map[uint32]*use{}
	for _, s := range c.services[w.Namespace] {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.Labels)) {
			continue
		}
		for _, sp := range s.Spec.Ports {
			proto := PortProtocol(sp)
			if proto == ir.ProtocolUDP {
				continue // not a TCP socket: nothing to capture or conflict with
			}
			port, ok := targetPort(sp, w.NamedPorts)
			if !ok {
				continue
			}
			u := byPort[port]
			if u == nil {
				u = &use{}
				byPort[port] = u
			}
			if !proto.IsHTTP() {
				u.other = true
				continue
			}
			if !u.http || proto < u.proto {
				u.proto = proto
			}
			u.http = true
		}
	}
	var out []CapturedPort
	for port, u := range byPort {
		if u.http && !u.other {
			out = append(out, CapturedPort{Port: port, Protocol: u.proto, MTLS: mtls[port]})
		}
	}
	return mtlsOnly(mtls, out)
}

// mtlsOnly adds the mTLS ports that out (the HTTP captures) lacks, as
// MTLSOnly TCP ports, and sorts.
func mtlsOnly(mtls map[uint32]MTLSMode, out []CapturedPort) []CapturedPort {
	for port, mode := range mtls {
		if !slices.ContainsFunc(out, func(p CapturedPort) bool { return p.Port == port }) {
			out = append(out, CapturedPort{Port: port, Protocol: ir.ProtocolTCP, MTLS: mode, MTLSOnly: true})
		}
	}
	slices.SortFunc(out, func(a, b CapturedPort) int { return cmp.Compare(a.Port, b.Port) })
	return out
}

func (c *Capture) l7Applies(w Workload) bool {
	for _, s := range c.l7 {
		if s.applies(w.Namespace, w.Labels) {
			return true
		}
	}
	return false
}

// targetPort resolves a Service port to the pod's container port: a number,
// the port itself when unset, or a name looked up in the pod's named
// ports (a pod without that name does not serve the Service port, as for
// Kubernetes endpoints).
func targetPort(sp corev1.ServicePort, named []NamedPort) (uint32, bool) {
	tp := sp.TargetPort
	if tp.Type == intstr.String && tp.StrVal != "" {
		for _, n := range named {
			if n.Name == tp.StrVal {
				return uint32(n.Port), n.Port > 0
			}
		}
		return 0, false
	}
	if tp.IntVal > 0 {
		return uint32(tp.IntVal), true
	}
	return uint32(sp.Port), sp.Port > 0
}

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

// PortProtocol is Istio's protocol selection for a Service port
// (pilot/pkg/serviceregistry/kube: ConvertProtocol): the L4 protocol first
// (UDP and SCTP are not proxied), then appProtocol, then the port name —
// "http" or "http-<suffix>" — and otherwise protocol sniffing (Unknown).
// The translator's outbound listener and the inbound capture use this one
// rule.
func PortProtocol(p corev1.ServicePort) ir.Protocol {
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

// Applies is whether an authorization policy applies to a pod's inbound
// traffic, for many pods (the selector is parsed once): the pod is in the
// policy's namespace (any namespace for a policy of the root namespace),
// has the labels of its selector, and, with targetRefs, is selected by one
// of the named Services of its namespace.
func Applies(p *ir.Policy, services []*corev1.Service) func(namespace string, podLabels map[string]string) bool {
	var sel labels.Selector
	if w := p.Scope.Workloads; w != nil {
		reqs := make([]metav1.LabelSelectorRequirement, 0, len(w.MatchExpressions))
		for _, r := range w.MatchExpressions {
			reqs = append(reqs, metav1.LabelSelectorRequirement{Key: r.Key, Operator: metav1.LabelSelectorOperator(r.Operator), Values: r.Values})
		}
		s, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: w.MatchLabels, MatchExpressions: reqs})
		if err != nil {
			// The translation only writes valid selectors; one that does
			// not parse widens the scope (every action denies more on more
			// pods: an allow isolates, a deny denies).
			s = labels.Everything()
		}
		sel = s
	}
	var targets []*corev1.Service
	for _, s := range services {
		if slices.Contains(p.Scope.Services, s.Name) && len(s.Spec.Selector) > 0 {
			targets = append(targets, s)
		}
	}
	return func(namespace string, podLabels map[string]string) bool {
		if p.Scope.Namespace != "" && p.Scope.Namespace != namespace {
			return false
		}
		if sel != nil && !sel.Matches(labels.Set(podLabels)) {
			return false
		}
		if len(p.Scope.Services) == 0 {
			return true
		}
		for _, s := range targets {
			if s.Namespace == namespace && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(podLabels)) {
				return true
			}
		}
		return false
	}
}
