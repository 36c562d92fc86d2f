package translate

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// The facade's names for what its users hold of the layers below: the
// controller (package xds and below) reads the translator only through this
// package and translate/ir.

// Bag is the translator's input: typed objects from files or informers.
type Bag = input.Bag

// Pod is what translation reads of a Pod (the controller's informer cache
// keeps only this).
type Pod = input.Pod

// PodFrom slims a Pod to what translation reads of it.
func PodFrom(p *corev1.Pod) *Pod { return input.PodFrom(p) }

// Resources is Envoy configuration: listeners, route configurations,
// clusters and assignments, each sorted by name.
type Resources = envoy.Resources

// Problem is a validation finding about an Envoy resource.
type Problem = envoy.Problem

// Validate validates Envoy resources as the translator validates what it
// emits (go-control-plane's rules, also inside Any, and nodemesh's
// reference and value checks).
func Validate(r *Resources) []Problem { return envoy.Validate(r) }

// RouteConfigNames are the route configurations a listener's HTTP
// connection managers fetch over RDS.
func RouteConfigNames(l *listenerv3.Listener) []string { return envoy.RouteConfigNames(l) }

// Origins are the Kubernetes resources an emitted resource was made from
// (its filter_metadata.istio.config entries, wherever they are).
func Origins(m proto.Message) []ir.ResourceRef { return envoy.Origins(m) }
