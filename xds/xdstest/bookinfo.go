package xdstest

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"text/template"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/nodemesh/nodemesh/translate"
)

// Bookinfo is the part of bookinfo that gRPC clients exercise — reviews
// (v1, v2, v3) and ratings (v1, failing two calls in three) — with gRPC test
// backends standing in for the pods: Services, Pods, EndpointSlices,
// DestinationRules and VirtualServices whose routing the behaviour checks
// observe.
type Bookinfo struct {
	Namespace string
	Backends  *Backends
	// Objects are typed Kubernetes and Istio objects, in creation order.
	Objects []any
}

// Backend names, which are also the pods' names.
var bookinfoPods = []string{"reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1"}

// NewBookinfo starts the backends (pods) on addrs and describes them.
func NewBookinfo(t testing.TB, ns string, addrs Addresses) *Bookinfo {
	t.Helper()
	bs := StartBackends(t, addrs, bookinfoPods...)
	bs.ByName["ratings-v1"].FailEvery = 3
	b := &Bookinfo{Namespace: ns, Backends: bs}
	b.Objects = b.decode(t, bookinfoPlatform+bookinfoRouting+ReviewsRouting)
	return b
}

// Target is the xds:/// target (and listener name) of a bookinfo service.
func (b *Bookinfo) Target(service string) string {
	return fmt.Sprintf("%s.%s.svc.cluster.local:9080", service, b.Namespace)
}

// Bag is the objects as translator input.
func (b *Bookinfo) Bag() *translate.Bag {
	bag := &translate.Bag{}
	for _, o := range b.Objects {
		bag.Add(o)
	}
	bag.Sort()
	return bag
}

// VirtualService decodes a VirtualService manifest (a template that may use
// {{.Namespace}}).
func (b *Bookinfo) VirtualService(t testing.TB, manifest string) *networkingv1.VirtualService {
	t.Helper()
	objs := b.decode(t, manifest)
	if len(objs) != 1 {
		t.Fatalf("want one VirtualService, got %d objects", len(objs))
	}
	vs, ok := objs[0].(*networkingv1.VirtualService)
	if !ok {
		t.Fatalf("want a VirtualService, got %T", objs[0])
	}
	return vs
}

func (b *Bookinfo) decode(t testing.TB, manifest string) []any {
	t.Helper()
	type pod struct {
		Name, App, Version, IP string
		Port                   int
	}
	data := map[string]any{"Namespace": b.Namespace}
	var pods []pod
	for _, name := range bookinfoPods {
		app, version, _ := strings.Cut(name, "-")
		pods = append(pods, pod{Name: name, App: app, Version: version, IP: b.Backends.IP(name), Port: b.Backends.Port(name)})
	}
	data["Pods"] = pods
	var buf bytes.Buffer
	if err := template.Must(template.New("bookinfo").Parse(manifest)).Execute(&buf, data); err != nil {
		t.Fatalf("bookinfo template: %v", err)
	}
	bag, diags := translate.LoadBytes("bookinfo-grpc.yaml", buf.Bytes(), b.Namespace)
	if len(diags) > 0 {
		t.Fatalf("bookinfo fixture: %v", diags)
	}
	return bag.Objects()
}

const bookinfoPlatform = `
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: {{.Namespace}}, labels: {app: reviews}}
spec:
  selector: {app: reviews}
  ports:
  - {name: grpc, port: 9080, targetPort: grpc}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: {{.Namespace}}, labels: {app: ratings}}
spec:
  selector: {app: ratings}
  ports:
  - {name: grpc, port: 9080, targetPort: grpc}
{{- range .Pods}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {{.Name}}
  namespace: {{$.Namespace}}
  labels: {app: {{.App}}, version: {{.Version}}}
spec:
  nodeName: node-1
  containers:
  - name: {{.App}}
    image: docker.io/istio/examples-bookinfo-{{.App}}-{{.Version}}:1.20.3
    ports:
    - {name: grpc, containerPort: {{.Port}}}
status:
  phase: Running
  podIP: "{{.IP}}"
  podIPs: [{ip: "{{.IP}}"}]
  conditions:
  - {type: Ready, status: "True"}
{{- end}}
{{- range .Pods}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {{.Name}}
  namespace: {{$.Namespace}}
  labels: {kubernetes.io/service-name: {{.App}}}
addressType: IPv4
ports:
- {name: grpc, port: {{.Port}}, protocol: TCP}
endpoints:
- addresses: ["{{.IP}}"]
  conditions: {ready: true}
  nodeName: node-1
  targetRef: {kind: Pod, namespace: {{$.Namespace}}, name: {{.Name}}}
{{- end}}
`

// bookinfoRouting is the DestinationRules and the ratings VirtualService.
const bookinfoRouting = `
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: {{.Namespace}}}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: {{.Namespace}}}
spec:
  host: ratings
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: {{.Namespace}}}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers: {x-retry: {exact: "off"}}
    route:
    - destination: {host: ratings, subset: v1}
    retries: {attempts: 0}
  - route:
    - destination: {host: ratings, subset: v1}
    retries: {attempts: 3, retryOn: unavailable}
`

// ReviewsRouting is the reviews VirtualService the behaviour checks expect:
// jason → v2, fault abort and delay, a timeout, and an 80/20 split of v1
// and v3 for everyone else.
const ReviewsRouting = `
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: {{.Namespace}}}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - match:
    - headers: {x-fault: {exact: abort}}
    fault:
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}
    route:
    - destination: {host: reviews, subset: v1}
  - match:
    - headers: {x-fault: {exact: delay}}
    fault:
      delay: {fixedDelay: 300ms, percentage: {value: 100}}
    route:
    - destination: {host: reviews, subset: v1}
  - match:
    - headers: {x-timeout: {exact: short}}
    timeout: 200ms
    route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v3}
      weight: 20
`

// ReviewsWeighted splits reviews calls between v1 (weight) and v3.
func ReviewsWeighted(weight int) string {
	return fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: {{.Namespace}}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: %d
    - destination: {host: reviews, subset: v3}
      weight: %d
`, weight, 100-weight)
}

// ReviewsAllV3 sends every reviews call to v3.
const ReviewsAllV3 = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: {{.Namespace}}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
`
