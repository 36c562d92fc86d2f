//go:build ignore

// Command istio-oracle runs Istio's own xDS generator — pilot's
// FakeDiscoveryServer (istio.io/istio/pilot/test/xds) at the Istio version
// hack/istiod-build.sh pins — on one input.yaml for one sidecar proxy, and
// writes istiod's CDS, RDS and LDS as protojson arrays sorted by name
// (cds.json, rds.json, lds.json), the format of ../shared/conformance/
// istio-oracle. translate/oracle_test.go compares nodemesh with them.
//
// It is not part of the nodemesh module (Istio is never a dependency):
// hack/istio-oracle/gen.sh builds it in a temporary module that requires
// istio.io/istio with Istio's own go.mod. Each Deployment of the input gets
// one running Pod (10.244.0.10, .11, …) as the shared oracle assumed; Istio
// resources get the cluster domain "cluster.local" and, when unset, creation
// times in document order (the precedence kubectl apply would give them).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	xdsfake "istio.io/istio/pilot/test/xds"
)

// failer satisfies istio's test.Failer outside a test binary: any failure
// ends the program.
type failer struct{}

func (f *failer) Fail()                     { panic("fail") }
func (f *failer) FailNow()                  { panic("failnow") }
func (f *failer) Fatal(a ...any)            { fmt.Fprintln(os.Stderr, a...); os.Exit(1) }
func (f *failer) Fatalf(s string, a ...any) { fmt.Fprintf(os.Stderr, s+"\n", a...); os.Exit(1) }
func (f *failer) Log(a ...any)              {}
func (f *failer) Logf(s string, a ...any)   {}
func (f *failer) TempDir() string           { d, _ := os.MkdirTemp("", "og"); return d }
func (f *failer) Helper()                   {}
func (f *failer) Cleanup(fn func())         {}
func (f *failer) Skip(a ...any)             {}

func main() {
	in := flag.String("in", "", "input.yaml")
	out := flag.String("out", "", "output dir")
	pod := flag.String("pod", "productpage-v1-0", "proxy pod name")
	ns := flag.String("ns", "default", "proxy namespace")
	ip := flag.String("ip", "10.244.0.7", "proxy IP")
	labels := flag.String("labels", "app=productpage,version=v1", "proxy labels")
	defNS := flag.String("default-ns", "default", "namespace of objects without one")
	flag.Parse()
	data, err := os.ReadFile(*in)
	if err != nil {
		panic(err)
	}
	var kube, istio []string
	nextIP := 10
	for _, doc := range strings.Split(string(data), "\n---") {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil || meta.Kind == "" {
			continue
		}
		var obj map[string]any
		_ = yaml.Unmarshal([]byte(doc), &obj)
		md, _ := obj["metadata"].(map[string]any)
		if md == nil {
			md = map[string]any{}
			obj["metadata"] = md
		}
		if md["namespace"] == nil && meta.Kind != "Namespace" {
			md["namespace"] = *defNS
		}
		if meta.Kind == "Deployment" {
			kube = append(kube, podFor(obj, &nextIP))
		}
		b, _ := yaml.Marshal(obj)
		doc = string(b)
		if strings.Contains(meta.APIVersion, "istio.io") {
			istio = append(istio, doc)
		} else {
			kube = append(kube, doc)
		}
	}
	lbl := map[string]string{}
	for _, kv := range strings.Split(*labels, ",") {
		k, v, _ := strings.Cut(kv, "=")
		lbl[k] = v
	}
	cfgs, _, err := crd.ParseInputs(strings.Join(istio, "\n---\n"))
	if err != nil {
		panic(err)
	}
	for i := range cfgs {
		cfgs[i].Domain = "cluster.local"
		if cfgs[i].CreationTimestamp.IsZero() {
			cfgs[i].CreationTimestamp = time.Date(2026, 8, 22, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
		}
	}
	s := xdsfake.NewFakeDiscoveryServer(&failer{}, xdsfake.FakeOptions{
		KubernetesObjectString: strings.Join(kube, "\n---\n"),
		Configs:                cfgs,
	})
	pc := model.NewPushContext()
	pc.InitContext(s.Env(), nil, nil)
	s.Env().SetPushContext(pc)
	// The fake server's initial push may predate the configs; build the push
	// context from the complete store, as istiod's full push does.
	p := s.SetupProxy(&model.Proxy{
		ID:              *pod + "." + *ns,
		ConfigNamespace: *ns,
		IPAddresses:     []string{*ip},
		Labels:          lbl,
		Metadata:        &model.NodeMetadata{IstioVersion: "1.32.0", Labels: lbl, Namespace: *ns},
	})
	write := func(name string, msgs []proto.Message, names []string) {
		idx := make([]int, len(msgs))
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return names[idx[a]] < names[idx[b]] })
		var arr []json.RawMessage
		for _, i := range idx {
			b, err := protojson.Marshal(msgs[i])
			if err != nil {
				panic(err)
			}
			arr = append(arr, b)
		}
		b, _ := json.Marshal(arr)
		var buf bytes.Buffer
		json.Indent(&buf, b, "", " ")
		os.WriteFile(filepath.Join(*out, name), buf.Bytes(), 0o644)
	}
	var ms []proto.Message
	var ns2 []string
	for _, c := range s.Clusters(p) {
		ms, ns2 = append(ms, c), append(ns2, c.Name)
	}
	write("cds.json", ms, ns2)
	ms, ns2 = nil, nil
	for _, c := range s.Routes(p) {
		ms, ns2 = append(ms, c), append(ns2, c.Name)
	}
	write("rds.json", ms, ns2)
	ms, ns2 = nil, nil
	for _, c := range s.Listeners(p) {
		ms, ns2 = append(ms, c), append(ns2, c.Name)
	}
	write("lds.json", ms, ns2)
}

// podFor is the one running pod of a Deployment (as the shared oracle assumed).
func podFor(dep map[string]any, next *int) string {
	md := dep["metadata"].(map[string]any)
	spec, _ := dep["spec"].(map[string]any)
	tmpl, _ := spec["template"].(map[string]any)
	tmd, _ := tmpl["metadata"].(map[string]any)
	tspec, _ := tmpl["spec"].(map[string]any)
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": fmt.Sprint(md["name"]) + "-0", "namespace": md["namespace"], "labels": tmd["labels"]},
		"spec":     map[string]any{"serviceAccountName": tspec["serviceAccountName"], "containers": tspec["containers"], "nodeName": "node-1"},
		"status": map[string]any{"phase": "Running", "podIP": fmt.Sprintf("10.244.0.%d", *next), "podIPs": []any{map[string]any{"ip": fmt.Sprintf("10.244.0.%d", *next)}},
			"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}},
	}
	*next++
	b, _ := yaml.Marshal(pod)
	return string(b)
}
