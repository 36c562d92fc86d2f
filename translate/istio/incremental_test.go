package istio

import (
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/internal/meshgen"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// sameAsFresh checks that an incremental translation equals translating the
// new input from scratch: the model, the diagnostics and a node's model.
func sameAsFresh(t *testing.T, got *Prepared, bag *input.Bag) {
	t.Helper()
	want := Prepare(bag, Options{})
	if !reflect.DeepEqual(got.Base, want.Base) {
		for i := range want.Base.Endpoints {
			if i < len(got.Base.Endpoints) && !reflect.DeepEqual(got.Base.Endpoints[i], want.Base.Endpoints[i]) {
				t.Errorf("endpoints of %s: got %+v, want %+v", want.Base.Endpoints[i].Cluster, got.Base.Endpoints[i].Endpoints, want.Base.Endpoints[i].Endpoints)
			}
		}
		t.Fatal("incremental model differs from a fresh translation")
	}
	if g, w := got.Diagnostics(), want.Diagnostics(); !slices.EqualFunc(g, w, func(a, b ir.Diagnostic) bool { return a == b }) {
		t.Errorf("diagnostics:\ngot  %v\nwant %v", g, w)
	}
	for _, node := range []string{"node-0", "node-1"} {
		if g, w := got.Node(got.NodeClasses(node)), want.Node(want.NodeClasses(node)); !reflect.DeepEqual(g, w) {
			t.Errorf("%s: node model differs", node)
		}
	}
}

func TestWithEndpoints(t *testing.T) {
	for _, slicesToo := range []bool{true, false} {
		name := map[bool]string{true: "EndpointSlices", false: "Pods"}[slicesToo]
		t.Run(name, func(t *testing.T) {
			mesh := meshgen.New(meshgen.Options{Services: 20, PodsPerService: 6, Nodes: 2, Namespaces: 3, OptIn: true, EndpointSlices: slicesToo})
			p := Prepare(mesh.Bag(), Options{})
			// Routing of a class is computed before the change and shared after.
			p.Node(p.NodeClasses("node-0"))
			// A compacted translation recomputes the same assignments.
			compact := Prepare(mesh.Bag(), Options{})
			compact.Compact()
			svc := mesh.Services[7]
			key := svc.Namespace + "/" + svc.Name
			// unready makes the Service's i-th endpoint unready, through its
			// EndpointSlice or its Pod.
			unready := func(i int) {
				if slicesToo {
					es := mesh.EndpointSlices[7].DeepCopy()
					notReady := false
					es.Endpoints[i].Conditions.Ready = &notReady
					mesh.EndpointSlices[7] = es
					return
				}
				pod := mesh.Pods[7*6+i].DeepCopy()
				pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
				mesh.Pods[7*6+i] = pod
			}

			// One endpoint becomes unready.
			unready(1)
			bag := mesh.Bag()
			next, changed, ok := p.WithEndpoints(bag, []string{key})
			if !ok {
				t.Fatal("endpoint-only change refused")
			}
			if len(changed) != 4 { // the Service's cluster and its three subsets
				t.Errorf("changed clusters %v, want 4", changed)
			}
			for _, ce := range changed {
				if i := slices.IndexFunc(next.Base.Endpoints, func(have ir.ClusterEndpoints) bool { return have.Cluster == ce.Cluster }); i < 0 || !reflect.DeepEqual(next.Base.Endpoints[i], ce) {
					t.Errorf("%s: the changed assignment is not the model's", ce.Cluster)
				}
			}
			nextCompact, changedCompact, ok := compact.WithEndpoints(bag, []string{key})
			if !ok || !reflect.DeepEqual(changedCompact, changed) || nextCompact.Base.Endpoints != nil {
				t.Errorf("compacted: ok=%v, changed %d assignments (equal: %v), kept %d", ok, len(changedCompact), reflect.DeepEqual(changedCompact, changed), len(nextCompact.Base.Endpoints))
			}
			sameAsFresh(t, next, bag)
			if reflect.DeepEqual(next.Base.Endpoints, p.Base.Endpoints) {
				t.Error("the change did not change any assignment")
			}

			// Every endpoint of subset v2 goes: a subset selecting nothing is
			// a warning, as in a fresh translation.
			for i := 1; i < 6; i += 3 {
				unready(i)
			}
			bag = mesh.Bag()
			next2, _, ok := next.WithEndpoints(bag, []string{key})
			if !ok {
				t.Fatal("refused")
			}
			sameAsFresh(t, next2, bag)

			// Then every endpoint: the Service has none (an informational
			// diagnostic) and every subset is empty.
			for i := range 6 {
				unready(i)
			}
			bag = mesh.Bag()
			next3, _, ok := next2.WithEndpoints(bag, []string{key})
			if !ok {
				t.Fatal("refused")
			}
			sameAsFresh(t, next3, bag)
			// The earlier translations are untouched.
			sameAsFresh(t, p, meshgen.New(meshgen.Options{Services: 20, PodsPerService: 6, Nodes: 2, Namespaces: 3, OptIn: true, EndpointSlices: slicesToo}).Bag())
		})
	}
}

func TestWithEndpointsRefuses(t *testing.T) {
	mesh := meshgen.New(meshgen.Options{Services: 3, PodsPerService: 3})
	headless := mesh.Services[0].DeepCopy()
	headless.Name, headless.Spec.ClusterIP = "headless", corev1.ClusterIPNone
	mesh.Services = append(mesh.Services, headless)
	p := Prepare(mesh.Bag(), Options{})
	for _, key := range []string{headless.Namespace + "/headless", "ns-0/", "garbage"} {
		if _, _, ok := p.WithEndpoints(mesh.Bag(), []string{key}); ok {
			t.Errorf("%q: accepted", key)
		}
	}
	// A Service that does not exist has no endpoints to change.
	if next, changed, ok := p.WithEndpoints(mesh.Bag(), []string{"ns-0/no-such-service"}); !ok || len(changed) != 0 {
		t.Errorf("unknown Service: ok=%v, changed %v", ok, changed)
	} else {
		sameAsFresh(t, next, mesh.Bag())
	}
}
