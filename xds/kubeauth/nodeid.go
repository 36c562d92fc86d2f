package kubeauth

import (
	"fmt"
	"net/netip"
	"strings"
)

// Proxyless gRPC clients name themselves as Istio's do:
//
//	sidecar~<pod IP>~<pod name>.<namespace>~<namespace>.svc.<cluster domain>
//
// (istio-agent writes it into a proxyless application's bootstrap; the
// pod's IP and name come from the downward API). The controller serves
// such a node ID only to a token bound to that pod, with that IP among the
// pod's. A node name never has a '~', so a proxyless ID is never a node's.

// ProxylessNodeID is the node ID of a proxyless gRPC client in a pod.
func ProxylessNodeID(podIP, pod, namespace, clusterDomain string) string {
	return fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.%s", podIP, pod, namespace, namespace, clusterDomain)
}

// proxylessID is a parsed proxyless node ID.
type proxylessID struct {
	ip             netip.Addr
	pod, namespace string
	domain         string
}

func parseProxylessID(id string) (proxylessID, error) {
	parts := strings.Split(id, "~")
	if len(parts) != 4 || parts[0] != "sidecar" {
		return proxylessID{}, fmt.Errorf("not sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.<cluster domain>")
	}
	ip, err := netip.ParseAddr(parts[1])
	if err != nil {
		return proxylessID{}, fmt.Errorf("%q is not an IP address", parts[1])
	}
	// Pod names may contain dots; namespaces may not (DNS labels).
	dot := strings.LastIndexByte(parts[2], '.')
	if dot <= 0 {
		return proxylessID{}, fmt.Errorf("%q is not <pod>.<namespace>", parts[2])
	}
	p := proxylessID{ip: ip, pod: parts[2][:dot], namespace: parts[2][dot+1:]}
	domain, ok := strings.CutPrefix(parts[3], p.namespace+".svc.")
	if !ok {
		return proxylessID{}, fmt.Errorf("%q is not %s.svc.<cluster domain>", parts[3], p.namespace)
	}
	p.domain = domain
	return p, nil
}
