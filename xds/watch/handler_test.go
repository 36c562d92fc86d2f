package watch

import (
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/nodemesh/nodemesh/translate"
)

// The initial lists are translated once, from the synced stores: their Add
// notifications, which informers deliver after the caches report synced,
// must not queue a second full translation. Later Adds and Deletes do.
func TestInitialListIsNotTranslatedTwice(t *testing.T) {
	c := &Controller{kick: make(chan struct{}, 1)}
	h := c.handler().(cache.ResourceEventHandlerDetailedFuncs)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "bookinfo"}}
	h.OnAdd(svc, true)
	if ch := c.take(); ch.events != 0 || ch.full {
		t.Errorf("an Add of the initial list queued %+v", ch)
	}
	h.OnAdd(svc, false)
	if ch := c.take(); ch.events != 1 || !ch.full {
		t.Errorf("a later Add queued %+v, want a full translation", ch)
	}
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "reviews-1", Namespace: "bookinfo",
		Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}}}
	h.OnDelete(cache.DeletedFinalStateUnknown{Key: "bookinfo/reviews-1", Obj: es})
	if ch := c.take(); ch.full || !ch.services["bookinfo/reviews"] {
		t.Errorf("a Delete of an EndpointSlice queued %+v, want its Service's endpoints", ch)
	}
}

// transform keeps what the translator reads of an EndpointSlice and shares
// the strings objects repeat.
func TestTransform(t *testing.T) {
	ready, node, zone, host := true, "node-1", "zone-a", "h"
	port, portName := int32(9080), "http"
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews-1", Namespace: string([]byte("bookinfo")), ResourceVersion: "5",
			Labels:      map[string]string{discoveryv1.LabelServiceName: "reviews"},
			Annotations: map[string]string{corev1.LastAppliedConfigAnnotation: "{}"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses: []string{"10.0.0.1"}, Hostname: &host, NodeName: &node, Zone: &zone,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "bookinfo", Name: "reviews-v1-0", UID: "u", ResourceVersion: "3"},
		}},
	}
	out, err := transform(es)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*discoveryv1.EndpointSlice)
	e := got.Endpoints[0]
	if got.Name != "reviews-1" || got.ResourceVersion != "5" || got.Labels[discoveryv1.LabelServiceName] != "reviews" || len(got.Ports) != 1 ||
		got.Annotations != nil || got.ManagedFields != nil {
		t.Errorf("slice: %+v", got.ObjectMeta)
	}
	if e.Addresses[0] != "10.0.0.1" || !*e.Conditions.Ready || *e.NodeName != "node-1" || *e.Zone != "zone-a" ||
		e.TargetRef.Kind != "Pod" || e.TargetRef.Namespace != "bookinfo" || e.TargetRef.Name != "reviews-v1-0" {
		t.Errorf("endpoint lost what the translator reads: %+v", e)
	}
	if e.Hostname != nil || e.Conditions.Serving != nil || e.TargetRef.UID != "" || e.TargetRef.ResourceVersion != "" {
		t.Errorf("endpoint kept what the translator never reads: %+v", e)
	}
	pod, err := transform(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "reviews-v1-0", Namespace: string([]byte("bookinfo")),
		Labels: map[string]string{"app": string([]byte("reviews"))}}, Spec: corev1.PodSpec{NodeName: string([]byte("node-1"))}})
	if err != nil {
		t.Fatal(err)
	}
	p := pod.(*translate.Pod)
	for what, pair := range map[string][2]string{
		"namespace": {p.Namespace, got.Namespace}, "label value": {p.Labels["app"], got.Labels[discoveryv1.LabelServiceName]},
		"node": {p.NodeName, *e.NodeName},
	} {
		a, b := pair[0], pair[1]
		if what == "label value" {
			b = intern("reviews")
		}
		if unsafe.StringData(a) != unsafe.StringData(b) {
			t.Errorf("%s %q is not shared", what, a)
		}
	}
}
