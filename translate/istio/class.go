package istio

import (
	"maps"
	"slices"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Class is a source class: clients that see the same routing. Istio decides
// sourceLabels, sourceNamespace, gateways and short host names per client
// proxy; a node Envoy decides them per class.
type Class struct {
	Name      string
	Namespace string
	Labels    map[string]string
	// SourcePrefixes are the client addresses of the class (CIDRs).
	SourcePrefixes []string
}

// DefaultClass stands for any client no other class describes: no namespace,
// no labels. Routes restricted by sourceLabels or sourceNamespace do not apply
// to it, exactly as they would not apply to such a sidecar.
func DefaultClass() *Class { return &Class{Name: DefaultClassName} }

// DefaultClassName cannot be a namespace (namespaces are DNS labels), so it
// never collides with a class named after one.
const DefaultClassName = "_default"

func (c *Class) ir() ir.SourceClass {
	return ir.SourceClass{Name: c.Name, Namespace: c.Namespace, Labels: maps.Clone(c.Labels),
		SourcePrefixes: slices.Clone(c.SourcePrefixes)}
}

// meshGateway is the gateway name that stands for all sidecars (Istio's
// constants.IstioMeshGateway).
const meshGateway = "mesh"

// sourceMatch is Istio's sourceMatchHTTP for a class: match-level gateways
// decide alone when set; otherwise sourceLabels must be a subset of the
// class's labels and sourceNamespace, when set, its namespace.
func (c *Class) sourceMatch(gateways []string, sourceLabels map[string]string, sourceNamespace string) bool {
	if len(gateways) > 0 {
		return slices.Contains(gateways, meshGateway)
	}
	if !labelsMatch(sourceLabels, c.Labels) {
		return false
	}
	return sourceNamespace == "" || sourceNamespace == c.Namespace
}

func (c *Class) httpMatch(m *networking.HTTPMatchRequest) bool {
	if m == nil {
		return true
	}
	return c.sourceMatch(m.Gateways, m.SourceLabels, m.SourceNamespace)
}

func (c *Class) l4Match(m *networking.L4MatchAttributes) bool {
	if m == nil {
		return true
	}
	return c.sourceMatch(m.Gateways, m.SourceLabels, m.SourceNamespace)
}
