package istio

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Options tune the translation.
type Options struct {
	// ClusterDomain is the Kubernetes DNS domain (default cluster.local).
	ClusterDomain string
	// RootNamespace is Istio's config root namespace (default istio-system):
	// DestinationRules there apply to every namespace.
	RootNamespace string
	// PerProxy translates as Istio does for one sidecar: a short host name
	// resolves only to the client's own namespace's Service. Without it, a
	// short name no other Service on the port shares resolves for every
	// class, so that classes share the default class's routes (docs/parity.md).
	// The migration toolkit uses it to show what a sidecar sees.
	PerProxy bool
	// IstioMTLS speaks Istio mTLS to pods that have a sidecar, with each
	// client pod's own workload certificate (auto-mTLS and DestinationRule
	// ISTIO_MUTUAL), and loads DestinationRule credentialName over SDS. The
	// certificates come from the node agent's SDS server, so this is off
	// until that server runs: without it, nothing refers to an SDS secret
	// and the output is what it was before the option existed.
	IstioMTLS bool
	// TrustDomain is Istio's trust domain (default cluster.local): it
	// prefixes the SPIFFE IDs of clients and of destinations.
	TrustDomain string
	// DefaultVirtualServiceExportTo, DefaultDestinationRuleExportTo and
	// DefaultServiceExportTo are the mesh config's defaults of the same
	// names: the exportTo of a resource that sets none ("." or "*"; unset
	// means "*", as in Istio).
	DefaultVirtualServiceExportTo  []string
	DefaultDestinationRuleExportTo []string
	DefaultServiceExportTo         []string
	// OutboundTrafficPolicy is mesh config outboundTrafficPolicy.mode:
	// ALLOW_ANY (the default) passes traffic to unknown destinations
	// through; REGISTRY_ONLY blocks it (BlackHoleCluster, and a 502 from
	// the block_all virtual host), so that only Services and
	// ServiceEntries are reachable.
	OutboundTrafficPolicy OutboundTrafficPolicy
}

// OutboundTrafficPolicy is Istio's MeshConfig.OutboundTrafficPolicy.Mode.
type OutboundTrafficPolicy string

const (
	AllowAny     OutboundTrafficPolicy = "ALLOW_ANY"
	RegistryOnly OutboundTrafficPolicy = "REGISTRY_ONLY"
)

// ParseOutboundTrafficPolicy reads a mode as mesh config writes it.
func ParseOutboundTrafficPolicy(s string) (OutboundTrafficPolicy, error) {
	switch m := OutboundTrafficPolicy(strings.ToUpper(s)); m {
	case "", AllowAny:
		return AllowAny, nil
	case RegistryOnly:
		return m, nil
	}
	return "", fmt.Errorf("outbound traffic policy %q: want %s or %s", s, AllowAny, RegistryOnly)
}

// registryOnly says whether unknown destinations are blocked.
func (o Options) registryOnly() bool { return o.OutboundTrafficPolicy == RegistryOnly }

func (o Options) withDefaults() Options {
	if o.ClusterDomain == "" {
		o.ClusterDomain = ir.DefaultClusterDomain
	}
	if o.TrustDomain == "" {
		o.TrustDomain = ir.DefaultTrustDomain
	}
	if o.RootNamespace == "" {
		o.RootNamespace = "istio-system"
	}
	return o
}

// translator holds the indexes of one translation run.
type translator struct {
	opts  Options
	bag   *input.Bag
	diags ir.Diagnostics

	services    map[string]*service // by FQDN
	serviceList []*service          // Kubernetes Services, then ServiceEntry hosts, each sorted by FQDN
	// wildcardEntries are the services of wildcard ServiceEntry hosts,
	// most specific first (externalHost).
	wildcardEntries []*service

	// sans are the SPIFFE IDs of each Service's pods (serviceAccounts).
	sans map[*service][]string

	drsByNS map[string]*namespaceDRs
	drMemo  map[drKey]*mergedDR
	vss     []*vsInfo // sorted by Istio precedence (oldest first)
	// vsByNamespace memoizes, by client namespace, the VirtualService
	// that routes each Service for that client (vsFor).
	vsByNamespace map[string]map[*service]*vsInfo
	// variants are the clusters of each Service that some class namespace
	// needs besides Istio's (a DestinationRule the default class does not
	// see; see buildClusters).
	variants map[*service][]drVariant
	// classNamespaces are the namespaces whose pods can be classes (opted
	// in) and that can see another DestinationRule than the default class
	// (routingNamespaces): the only ones cluster variants are built for.
	classNamespaces []string
	// delegates are the VirtualServices without hosts, by "namespace/name".
	delegates map[string]*delegateInfo

	// endpoints are each Service's ready backends, and epDiags the
	// diagnostics about them. They are kept apart from the rest so that an
	// endpoint-only change recomputes just them (Prepared.WithEndpoints);
	// both maps are copied on write.
	endpoints map[*service][]*endpoint
	epDiags   map[*service]ir.Diagnostics
}

// Translate computes the IR for the default source class: a client that
// carries no labels and no namespace, which is what offline translation
// without pods describes.
func Translate(bag *input.Bag, opts Options) (*ir.Model, ir.Diagnostics) {
	p := Prepare(bag, opts)
	return p.Base, p.Diagnostics()
}

func sortModel(m *ir.Model) {
	slices.SortFunc(m.Listeners, func(a, b ir.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(m.RouteConfigs, func(a, b ir.RouteConfig) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(m.Clusters, func(a, b ir.Cluster) int { return compareClusterNames(a.Name, b.Name) })
	slices.SortFunc(m.Endpoints, func(a, b ir.ClusterEndpoints) int { return compareClusterNames(a.Cluster, b.Cluster) })
}

// compareClusterNames groups outbound clusters by host, then port, with the
// subset-less cluster first; other clusters sort before them by name.
func compareClusterNames(a, b string) int {
	pa, sa, ha, oka := ir.ParseOutboundClusterName(a)
	pb, sb, hb, okb := ir.ParseOutboundClusterName(b)
	switch {
	case oka && okb:
		return cmp.Or(cmp.Compare(ha, hb), cmp.Compare(pa, pb), cmp.Compare(sa, sb))
	case oka != okb:
		if oka {
			return 1
		}
		return -1
	}
	return cmp.Compare(a, b)
}

// reportIgnoredKinds notes the kinds that are read but not translated.
func (t *translator) reportIgnoredKinds() {
	for _, gw := range t.bag.Gateways {
		t.diags.Infof(ir.CodeIgnoredKind, ir.ResourceRef{Kind: "Gateway", Namespace: gw.Namespace, Name: gw.Name}, "",
			"Gateway is not translated: nodemesh configures the mesh data plane, not ingress or egress gateways")
	}
}
