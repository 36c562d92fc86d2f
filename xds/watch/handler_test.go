package watch

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
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
