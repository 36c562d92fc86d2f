// Package meshgen generates synthetic meshes for benchmarks: Services with
// one HTTP port, each with a VirtualService (a header match plus a 2-way
// weighted split, retries and a timeout), a DestinationRule with 3 subsets,
// and Pods spread over the subsets and over nodes.
package meshgen

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate/input"
)

// Options shape a mesh.
type Options struct {
	Services int
	// PodsPerService are spread round-robin over subsets v1, v2, v3.
	PodsPerService int
	// Nodes the Pods are spread over (node-0 …).
	Nodes int
	// Namespaces the Services are spread over (ns-0 …); with OptIn they are
	// Namespace objects labelled istio.io/dataplane-mode=nodemesh.
	Namespaces int
	OptIn      bool
	// EndpointSlices adds one ready EndpointSlice per Service, as the
	// EndpointSlice controller would (Pods are then only read for labels).
	EndpointSlices bool
	// Prefix starts every namespace name (default "ns").
	Prefix string
}

// Mesh is the generated objects.
type Mesh struct {
	Namespaces       []*corev1.Namespace
	Services         []*corev1.Service
	Pods             []*corev1.Pod
	EndpointSlices   []*discoveryv1.EndpointSlice
	DestinationRules []*networkingv1.DestinationRule
	VirtualServices  []*networkingv1.VirtualService
}

// New generates a mesh.
func New(o Options) *Mesh {
	if o.Nodes <= 0 {
		o.Nodes = 10
	}
	if o.Namespaces <= 0 {
		o.Namespaces = 50
	}
	if o.Prefix == "" {
		o.Prefix = "ns"
	}
	m := &Mesh{}
	if o.OptIn {
		for i := range min(o.Namespaces, max(o.Services, 1)) {
			m.Namespaces = append(m.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
				Name: o.Prefix + "-" + strconv.Itoa(i), Labels: map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh},
			}})
		}
	}
	podN := 0
	for i := range o.Services {
		name := "svc-" + strconv.Itoa(i)
		ns := o.Prefix + "-" + strconv.Itoa(i%o.Namespaces)
		m.Services = append(m.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{
				ClusterIP: fmt.Sprintf("10.%d.%d.%d", 96+i/65536, i/256%256, i%256),
				Selector:  map[string]string{"app": name},
				Ports:     []corev1.ServicePort{{Name: "http", Port: 8080}},
			},
		})
		var slice *discoveryv1.EndpointSlice
		if o.EndpointSlices {
			portName, port, ready := "http", int32(8080), true
			slice = &discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Name: name + "-0", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
			}
			m.EndpointSlices = append(m.EndpointSlices, slice)
			_ = ready
		}
		for p := range o.PodsPerService {
			ip := PodIP(podN)
			podN++
			node := "node-" + strconv.Itoa(p%o.Nodes)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name + "-" + strconv.Itoa(p), Namespace: ns,
					Labels: map[string]string{"app": name, "version": "v" + strconv.Itoa(p%3+1)}},
				Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
					Name: "app", Image: "registry.example/app:1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
			}
			if !o.EndpointSlices && !o.OptIn {
				// The translator benchmark's historical shape: no phase, no
				// conditions, no containers.
				pod.Spec.Containers, pod.Status = nil, corev1.PodStatus{PodIP: ip}
			}
			m.Pods = append(m.Pods, pod)
			if slice != nil {
				ready := true
				nodeName := node
				slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
					Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, NodeName: &nodeName,
					TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod.Name},
				})
			}
		}
		m.DestinationRules = append(m.DestinationRules, &networkingv1.DestinationRule{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: networking.DestinationRule{Host: name, Subsets: []*networking.Subset{
				{Name: "v1", Labels: map[string]string{"version": "v1"}},
				{Name: "v2", Labels: map[string]string{"version": "v2"}},
				{Name: "v3", Labels: map[string]string{"version": "v3"}},
			}},
		})
		m.VirtualServices = append(m.VirtualServices, VirtualService(ns, name, 80))
	}
	return m
}

// PodIP is the address of the n-th Pod of a mesh.
func PodIP(n int) string {
	return fmt.Sprintf("10.%d.%d.%d", 128+n/65536, n/256%256, n%256)
}

// VirtualService is a mesh Service's VirtualService: jason to v3, everyone
// else weight% to v1 and the rest to v2, with retries and a timeout.
func VirtualService(ns, name string, weight int32) *networkingv1.VirtualService {
	return &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: networking.VirtualService{Hosts: []string{name}, Http: []*networking.HTTPRoute{
			{
				Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{
					"end-user": {MatchType: &networking.StringMatch_Exact{Exact: "jason"}}}}},
				Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: name, Subset: "v3"}}},
			},
			{
				Route: []*networking.HTTPRouteDestination{
					{Destination: &networking.Destination{Host: name, Subset: "v1"}, Weight: weight},
					{Destination: &networking.Destination{Host: name, Subset: "v2"}, Weight: 100 - weight},
				},
				Timeout: durationpb.New(3 * time.Second),
				Retries: &networking.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(time.Second), RetryOn: "5xx,reset"},
			},
		}},
	}
}

// Objects lists every object in creation order (namespaces first).
func (m *Mesh) Objects() []any { return m.bag().Objects() }

// Bag is the mesh as translator input.
func (m *Mesh) Bag() *input.Bag {
	bag := m.bag()
	bag.Sort()
	return bag
}

// bag holds copies of the mesh's slices (sorting a Bag reorders them).
func (m *Mesh) bag() *input.Bag {
	b := &input.Bag{
		Namespaces: slices.Clone(m.Namespaces), Services: slices.Clone(m.Services),
		EndpointSlices: slices.Clone(m.EndpointSlices), DestinationRules: slices.Clone(m.DestinationRules),
		VirtualServices: slices.Clone(m.VirtualServices),
	}
	for _, p := range m.Pods {
		b.Add(p)
	}
	return b
}
