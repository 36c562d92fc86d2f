package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/internal/meshgen"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/istio"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/watch"
)

// equivalenceCases are the clusters of TestCLIAndControllerServeTheSame:
// manifests (paths relative to this directory) or a generated mesh.
// classes says the case must give some node a class route configuration,
// so that a pass cannot come from both paths serving only the default
// class.
var equivalenceCases = map[string]struct {
	inputs  []string
	mesh    *meshgen.Options
	classes bool
	// inbound says some node must be served an inbound listener.
	inbound bool
}{
	"bookinfo":       {inputs: []string{sample}},
	"source-classes": {inputs: []string{"../../translate/testdata/nodes/source-classes.in.yaml"}, classes: true},
	// Its pods see the default class's routing (no web v2 pod, no staging
	// client): its sourceLabels and sourceNamespace rules apply to no class.
	"source-selectors": {inputs: []string{"../../translate/testdata/virtualservice/source-selectors.in.yaml"}},
	"namespaces":       {inputs: []string{"../../translate/testdata/services/namespaces.in.yaml"}, classes: true},
	// Together: the classes of shop and staging see their own routing on
	// 8080 and the default class's on bookinfo's 9080, which only a
	// comparison with the default class's route configurations can tell
	// (the controller compares digests, having dropped them; the CLI
	// compares them).
	"bookinfo+source-classes": {inputs: []string{sample, "../../translate/testdata/nodes/source-classes.in.yaml"}, classes: true},
	// AuthorizationPolicies with HTTP facts: inbound listeners on node-1
	// (productpage, details), principals by pod address.
	"inbound": {inputs: []string{"../../translate/testdata/inbound/bookinfo-nodemesh.yaml", "../../translate/testdata/inbound/authz-http.yaml"}, inbound: true},
	// node-3 and node-4 have the same classes with different addresses:
	// the controller may not share one's listener with the other.
	"same classes, two nodes": {inputs: []string{"../../translate/testdata/nodes/source-classes.in.yaml", "../../xds/testdata/same-classes-two-nodes.yaml"}, classes: true},
	"meshgen":                 {mesh: &meshgen.Options{Services: 40, PodsPerService: 4, Nodes: 3, Namespaces: 4, OptIn: true, EndpointSlices: true}},
}

// TestCLIAndControllerServeTheSame builds one cluster two ways and asserts
// that every node is served the same xDS, resource for resource and byte for
// byte: the controller's informers on a real API server (xds/watch, its
// generation's ForNode: what it pushes), and `nodemesh translate --node`
// on the cluster's manifests as `kubectl get -o yaml` prints them — the
// API server defaults fields the sample manifests leave out (ClusterIPs),
// so the CLI reads what the cluster holds, as a user reproducing a node's
// configuration would. Namespaces the manifests use without defining are
// created opted in (istio.io/dataplane-mode=nodemesh), so that their pods
// are node clients and their source classes are exercised on both paths.
func TestCLIAndControllerServeTheSame(t *testing.T) {
	for name, tc := range equivalenceCases {
		t.Run(name, func(t *testing.T) {
			env := kubetest.Private(t)
			var objs []any
			if tc.mesh != nil {
				for _, o := range meshgen.New(*tc.mesh).Objects() {
					if svc, ok := o.(*corev1.Service); ok {
						svc.Spec.ClusterIP = "" // meshgen's first is the range's network address: the API server allocates
					}
					objs = append(objs, o)
				}
			} else {
				bag, diags, err := translate.Load(tc.inputs, nil, "default")
				if err != nil {
					t.Fatal(err)
				}
				if diags.HasErrors() {
					t.Fatalf("manifests: %v", diags)
				}
				objs = bag.Objects()
			}
			createCluster(t, env, objs)
			manifests := dumpCluster(t, env)
			gen := controllerGeneration(t, env)

			nodes := []string{"node-without-pods"}
			for _, p := range readBag(t, manifests).Pods {
				if p.NodeName != "" && !slices.Contains(nodes, p.NodeName) {
					nodes = append(nodes, p.NodeName)
				}
			}
			slices.Sort(nodes)
			classRoutes, inbound := 0, 0
			for _, node := range nodes {
				served, err := gen.ForNode(node, xds.EnvoyNode).Resources()
				if err != nil {
					t.Fatal(err)
				}
				printed := cliResources(t, manifests, node)
				compareResources(t, node, printed, served)
				for _, rc := range served.Routes {
					if strings.Contains(rc.GetName(), "~") {
						classRoutes++
					}
				}
				for _, l := range served.Listeners {
					if l.GetName() == "virtualInbound" {
						inbound++
					}
				}
			}
			if tc.inbound && inbound == 0 {
				t.Errorf("no node of %v got an inbound listener: the case does not exercise it", nodes)
			}
			if tc.classes && classRoutes == 0 {
				t.Errorf("no node of %v got a class route configuration: the case does not exercise source classes", nodes)
			}
		})
	}
}

// createCluster creates objects in the API server, namespaces first; a
// namespace they use but do not define is created (or, when it exists,
// labelled) opted in.
func createCluster(t *testing.T, env *kubetest.Env, objs []any) {
	t.Helper()
	ctx := context.Background()
	defined := map[string]bool{}
	used := map[string]bool{}
	for _, o := range objs {
		m := o.(metav1.Object)
		if _, ok := o.(*corev1.Namespace); ok {
			defined[m.GetName()] = true
		} else {
			used[m.GetNamespace()] = true
		}
	}
	optIn := map[string]string{istio.DataplaneModeLabel: istio.DataplaneModeValue}
	for _, ns := range slices.Sorted(func(yield func(string) bool) {
		for n := range used {
			if !defined[n] && !yield(n) {
				return
			}
		}
	}) {
		_, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: optIn}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			var have *corev1.Namespace
			if have, err = env.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
				have.Labels[istio.DataplaneModeLabel] = istio.DataplaneModeValue
				_, err = env.Client.CoreV1().Namespaces().Update(ctx, have, metav1.UpdateOptions{})
			}
		}
		if err != nil {
			t.Fatalf("namespace %s: %v", ns, err)
		}
	}
	for _, o := range objs {
		if _, err := env.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.(metav1.Object).GetName(), err)
		}
	}
}

// clusterKinds are what the controller reads.
var clusterKinds = []schema.GroupVersionResource{
	{Version: "v1", Resource: "namespaces"},
	{Version: "v1", Resource: "services"},
	{Version: "v1", Resource: "pods"},
	{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"},
	{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"},
	{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"},
	{Group: "networking.istio.io", Version: "v1", Resource: "serviceentries"},
	{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"},
}

// dumpCluster writes every object of those kinds in every namespace to a
// file, as `kubectl get -A -o yaml` prints them (a List per kind, managed
// fields hidden), and returns its path.
func dumpCluster(t *testing.T, env *kubetest.Env) string {
	t.Helper()
	client, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, gvr := range clusterKinds {
		list, err := client.Resource(gvr).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list %s: %v", gvr.Resource, err)
		}
		items := make([]any, 0, len(list.Items))
		for i := range list.Items {
			list.Items[i].SetManagedFields(nil)
			items = append(items, list.Items[i].Object)
		}
		data, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("---\n")
		out.Write(data)
	}
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readBag(t *testing.T, path string) *translate.Bag {
	t.Helper()
	bag, diags, err := translate.Load([]string{path}, nil, "default")
	if err != nil {
		t.Fatal(err)
	}
	if diags.HasErrors() {
		t.Fatalf("the cluster's manifests do not decode: %v", diags)
	}
	return bag
}

// controllerGeneration runs the controller's watch loop against env until
// it has translated the cluster, and returns that generation.
func controllerGeneration(t *testing.T, env *kubetest.Env) *xds.Generation {
	t.Helper()
	cache := xds.NewCache(nil, nil)
	ctl := watch.New(env.Client, env.Istio, cache, watch.Options{Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	deadline := time.Now().Add(time.Minute)
	for ctl.Ready() != nil || ctl.Generation() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("controller not ready after a minute: %v", ctl.Ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ctl.Generation()
}

// cliResources runs `nodemesh translate --node NODE -o json` on the
// manifests and decodes the resources it prints.
func cliResources(t *testing.T, manifests, node string) *translate.Resources {
	t.Helper()
	code, out, errOut := run(t, "", "translate", "-f", manifests, "--node", node, "-o", "json")
	if code != ExitOK {
		t.Fatalf("nodemesh translate --node %s: exit %d: %s", node, code, errOut)
	}
	var doc struct{ Listeners, Routes, Clusters, Endpoints []json.RawMessage }
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("translate output: %v", err)
	}
	r := &translate.Resources{}
	r.Listeners = decodeAll[*listenerv3.Listener](t, doc.Listeners)
	r.Routes = decodeAll[*routev3.RouteConfiguration](t, doc.Routes)
	r.Clusters = decodeAll[*clusterv3.Cluster](t, doc.Clusters)
	r.Endpoints = decodeAll[*endpointv3.ClusterLoadAssignment](t, doc.Endpoints)
	return r
}

func decodeAll[T proto.Message](t *testing.T, raw []json.RawMessage) []T {
	t.Helper()
	out := make([]T, 0, len(raw))
	for _, js := range raw {
		var m T
		m = m.ProtoReflect().Type().New().Interface().(T)
		if err := protojson.Unmarshal(js, m); err != nil {
			t.Fatalf("decode %T: %v", m, err)
		}
		out = append(out, m)
	}
	return out
}

// compareResources asserts that two configurations hold the same resources
// with the same deterministic encodings.
func compareResources(t *testing.T, node string, printed, served *translate.Resources) {
	t.Helper()
	compareType(t, node, "Listener", printed.Listeners, served.Listeners)
	compareType(t, node, "RouteConfiguration", printed.Routes, served.Routes)
	compareType(t, node, "Cluster", printed.Clusters, served.Clusters)
	compareType(t, node, "ClusterLoadAssignment", printed.Endpoints, served.Endpoints)
}

func compareType[T proto.Message](t *testing.T, node, typ string, printed, served []T) {
	t.Helper()
	index := func(ms []T) map[string][]byte {
		out := map[string][]byte{}
		for _, m := range ms {
			data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			out[resourceName(m)] = data
		}
		return out
	}
	p, s := index(printed), index(served)
	if len(p) == 0 && typ != "ClusterLoadAssignment" {
		t.Errorf("%s: the CLI printed no %s: nothing to compare", node, typ)
	}
	for name, pd := range p {
		sd, ok := s[name]
		switch {
		case !ok:
			t.Errorf("%s: %s %q printed by nodemesh translate, not served by the controller", node, typ, name)
		case !bytes.Equal(pd, sd):
			t.Errorf("%s: %s %q differs:\nprinted: %s\nserved:  %s", node, typ, name, textOf(printed, name), textOf(served, name))
		}
	}
	for name := range s {
		if _, ok := p[name]; !ok {
			t.Errorf("%s: %s %q served by the controller, not printed by nodemesh translate", node, typ, name)
		}
	}
}

func resourceName(m proto.Message) string {
	switch r := m.(type) {
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	case interface{ GetName() string }:
		return r.GetName()
	}
	return fmt.Sprintf("%T", m)
}

func textOf[T proto.Message](ms []T, name string) string {
	for _, m := range ms {
		if resourceName(m) == name {
			return protojson.Format(m)
		}
	}
	return ""
}
