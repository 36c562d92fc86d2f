package envoy

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// maxRepairRounds bounds the validate → withhold loop; each round can only
// remove units, and a removal can orphan at most one further level (a
// cluster's routes, a route configuration's chains).
const maxRepairRounds = 8

// Build converts the IR into validated xDS resources. Whatever fails
// validation is withheld at the smallest unit that can be (a route, a virtual
// host, a filter chain, a cluster) and reported as an InvalidXDS error; the
// rest is returned.
func Build(m *ir.Model) (*Resources, ir.Diagnostics) {
	r := &Resources{}
	diags := buildListenersAndRoutes(m, r)
	// Clusters and assignments are most of the work and independent: build
	// them on every core.
	clusters := make([]*clusterv3.Cluster, len(m.Clusters))
	errs := make([]error, len(m.Clusters))
	endpoints := sharedEndpoints(m)
	// A Service's clusters share one (immutable) metadata entry for it.
	services := map[*ir.ServiceRef]*structpb.Value{}
	for i := range m.Clusters {
		if s := m.Clusters[i].Service; s != nil && services[s] == nil {
			services[s] = serviceValue(s)
		}
	}
	r.Endpoints = make([]*endpointv3.ClusterLoadAssignment, len(m.Endpoints))
	parallel(len(m.Clusters)+len(m.Endpoints), func(i int) {
		if i < len(m.Clusters) {
			clusters[i], errs[i] = buildCluster(&m.Clusters[i], services)
			return
		}
		i -= len(m.Clusters)
		r.Endpoints[i] = buildEndpoints(&m.Endpoints[i], endpoints)
	})
	for i, c := range clusters {
		if errs[i] != nil {
			diags.Errorf(ir.CodeInvalidXDS, ir.ResourceRef{Kind: TypeCluster, Name: m.Clusters[i].Name}, "", "withheld: %v", errs[i])
			continue
		}
		r.Clusters = append(r.Clusters, c)
	}
	diags = append(diags, Repair(r)...)
	return r, diags
}

// buildListenersAndRoutes builds a model's listeners and route
// configurations into r; one that cannot be built is withheld and reported.
func buildListenersAndRoutes(m *ir.Model, r *Resources) ir.Diagnostics {
	var diags ir.Diagnostics
	for _, l := range m.Listeners {
		x, err := buildListener(l)
		if err != nil {
			diags.Errorf(ir.CodeInvalidXDS, ir.ResourceRef{Kind: TypeListener, Name: l.Name}, "", "withheld: %v", err)
			continue
		}
		r.Listeners = append(r.Listeners, x)
	}
	for _, rc := range m.RouteConfigs {
		x, err := buildRouteConfig(rc)
		if err != nil {
			diags.Errorf(ir.CodeInvalidXDS, ir.ResourceRef{Kind: TypeRoute, Name: rc.Name}, "", "withheld: %v", err)
			continue
		}
		r.Routes = append(r.Routes, x)
	}
	return diags
}

// BuildPart converts part of a node's model — route configurations,
// listeners, endpoint assignments — whose references resolve to already
// validated resources in refs, and validates it. It is how per-node and per-class pieces are added
// to a shared base without validating the base again.
func BuildPart(m *ir.Model, refs *Refs) (*Resources, ir.Diagnostics) {
	r := &Resources{}
	diags := buildListenersAndRoutes(m, r)
	if len(m.Endpoints) > 0 {
		shared := sharedEndpoints(m)
		r.Endpoints = make([]*endpointv3.ClusterLoadAssignment, len(m.Endpoints))
		for i := range m.Endpoints {
			r.Endpoints[i] = buildEndpoints(&m.Endpoints[i], shared)
		}
	}
	diags = append(diags, RepairWith(r, refs)...)
	return r, diags
}

// Repair validates resources and withholds every invalid unit until what is
// left is valid. It returns one diagnostic per problem found.
func Repair(r *Resources) ir.Diagnostics {
	return RepairWith(r, nil)
}

// RepairWith is Repair for resources whose references may also resolve to
// extra (see ValidateWith).
func RepairWith(r *Resources, extra *Refs) ir.Diagnostics {
	var diags ir.Diagnostics
	for round := 0; round < maxRepairRounds; round++ {
		problems := ValidateWith(r, extra)
		if len(problems) == 0 {
			return diags
		}
		for _, p := range problems {
			diags = append(diags, problemDiagnostic(p))
		}
		withhold(r, problems)
	}
	if problems := ValidateWith(r, extra); len(problems) > 0 {
		// Cannot happen with removal-only repairs; fail closed.
		for _, p := range problems {
			diags = append(diags, problemDiagnostic(p))
		}
		*r = Resources{}
	}
	return diags
}

func problemDiagnostic(p Problem) ir.Diagnostic {
	res := ir.ResourceRef{Kind: p.Type, Name: p.Name}
	if p.Origin != nil {
		res = *p.Origin
	}
	return ir.Diagnostic{
		Severity: ir.SeverityError, Code: ir.CodeInvalidXDS, Resource: res,
		Message: fmt.Sprintf("invalid xDS withheld: %s", p),
	}
}

// withhold removes the units problems point at.
func withhold(r *Resources, problems []Problem) {
	type unit struct{ index, a, b int }
	dropL, dropR, dropC, dropE := map[int]bool{}, map[int]bool{}, map[int]bool{}, map[int]bool{}
	chains := map[unit]bool{} // {listener, chain, 0}
	vhosts := map[unit]bool{} // {route config, vhost, 0}
	routes := map[unit]bool{} // {route config, vhost, route}
	for _, p := range problems {
		switch {
		case p.Type == TypeListener && p.Chain == -1:
			dropL[p.Index] = true
		case p.Type == TypeListener:
			chains[unit{p.Index, p.Chain, 0}] = true
		case p.Type == TypeRoute && p.VHost < 0:
			dropR[p.Index] = true
		case p.Type == TypeRoute && p.Route < 0:
			vhosts[unit{p.Index, p.VHost, 0}] = true
		case p.Type == TypeRoute:
			routes[unit{p.Index, p.VHost, p.Route}] = true
		case p.Type == TypeCluster:
			dropC[p.Index] = true
		case p.Type == TypeEndpoint:
			dropE[p.Index] = true
		}
	}
	for i, l := range r.Listeners {
		if chains[unit{i, DefaultChain, 0}] {
			l.DefaultFilterChain = nil
		}
		l.FilterChains = keep(l.FilterChains, func(j int) bool { return !chains[unit{i, j, 0}] })
	}
	for i, rc := range r.Routes {
		for j, vh := range rc.VirtualHosts {
			vh.Routes = keep(vh.Routes, func(k int) bool { return !routes[unit{i, j, k}] })
		}
		rc.VirtualHosts = keep(rc.VirtualHosts, func(j int) bool { return !vhosts[unit{i, j, 0}] })
	}
	r.Listeners = keep(r.Listeners, func(i int) bool { return !dropL[i] })
	r.Routes = keep(r.Routes, func(i int) bool { return !dropR[i] })
	r.Clusters = keep(r.Clusters, func(i int) bool { return !dropC[i] })
	r.Endpoints = keep(r.Endpoints, func(i int) bool { return !dropE[i] })
}

// keep returns the elements whose index ok accepts, in order.
func keep[T any](s []T, ok func(int) bool) []T {
	out := s[:0:0]
	for i, x := range s {
		if ok(i) {
			out = append(out, x)
		}
	}
	return out
}

// parallel calls f(0..n-1) on GOMAXPROCS goroutines.
func parallel(n int, f func(i int)) {
	parallelWith(n, func() struct{} { return struct{}{} }, func(_ struct{}, i int) { f(i) })
}

// parallelWith is parallel with per-goroutine state made by newState.
func parallelWith[S any](n int, newState func() S, f func(s S, i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := newState()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(s, i)
			}
		}()
	}
	wg.Wait()
}
