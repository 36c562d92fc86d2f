//go:build linux

package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/nodemesh/nodemesh/agent/identity"
	"github.com/nodemesh/nodemesh/bpf"
)

// TestRemoteIdentities: which addresses of other nodes' pods get which
// identity, and which stay WORLD.
func TestRemoteIdentities(t *testing.T) {
	ids := cache.NewSharedIndexInformer(&cache.ListWatch{}, &unstructured.Unstructured{}, 0, cache.Indexers{byHashIndex: hashIndex})
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	a := &Agent{cfg: Config{NodeName: "here", PodCIDR: netip.MustParsePrefix("10.244.1.0/24")},
		informers: &watchers{remotePods: corelisters.NewPodLister(pods), identities: ids}}
	known := func(id bpf.Identity, ns, sa string, labels map[string]string) {
		if err := ids.GetIndexer().Add(identity.Object(id, identity.KeyOf(ns, sa, labels))); err != nil {
			t.Fatal(err)
		}
	}
	known(1000, "shop", "", map[string]string{"app": "web"})
	known(900, "shop", "default", map[string]string{"app": "web"}) // same key ("" is default): the lowest wins
	known(2000, "shop", "api", map[string]string{"app": "api"})
	pod := func(name, node, ip string, labels map[string]string, mod ...func(*corev1.Pod)) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: labels},
			Spec:   corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}}
		if ip != "" {
			p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
		}
		for _, m := range mod {
			m(p)
		}
		if err := pods.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	web := map[string]string{"app": "web", "pod-template-hash": "abc"} // ignored label
	pod("web-1", "n2", "10.244.2.5", web)
	pod("api-1", "n3", "10.244.3.7", map[string]string{"app": "api"}, func(p *corev1.Pod) { p.Spec.ServiceAccountName = "api" })
	pod("dual", "n2", "10.244.2.6", web, func(p *corev1.Pod) {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "fd00::6"}) // IPv6 is not policed
	})
	pod("unknown", "n2", "10.244.2.9", map[string]string{"app": "new"}) // no identity object yet
	pod("pending", "n2", "", web)
	pod("done", "n2", "10.244.2.10", web, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })
	pod("host", "n2", "192.168.0.2", web, func(p *corev1.Pod) { p.Spec.HostNetwork = true })
	pod("mine", "here", "10.244.1.20", web)
	pod("stale", "n4", "10.244.1.21", web) // claims an address of this node's CIDR
	pod("clash-a", "n5", "10.244.5.1", web)
	pod("clash-b", "n5", "10.244.5.1", map[string]string{"app": "api"}, func(p *corev1.Pod) { p.Spec.ServiceAccountName = "api" })
	pod("same-a", "n6", "10.244.6.1", web)
	pod("same-b", "n6", "10.244.6.1", web) // two pods, one identity: fine

	got, unresolved, err := a.remoteIdentities()
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]bpf.Identity{
		netip.MustParsePrefix("10.244.2.5/32"): 900,
		netip.MustParsePrefix("10.244.3.7/32"): 2000,
		netip.MustParsePrefix("10.244.2.6/32"): 900,
		netip.MustParsePrefix("10.244.6.1/32"): 900,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("remote identities (-want +got):\n%s", diff)
	}
	if unresolved != 1 {
		t.Errorf("unresolved: %d, want 1 (the pod whose key has no identity)", unresolved)
	}
}

// TestRemotePodTransform: the informer keeps only what remoteIdentities
// reads.
func TestRemotePodTransform(t *testing.T) {
	in := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "u", ResourceVersion: "7", Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{"big": "x"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: corev1.PodSpec{NodeName: "n2", ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "img"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.2.5", PodIPs: []corev1.PodIP{{IP: "10.244.2.5"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady}}},
	}
	out, err := remotePod(in)
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "u", ResourceVersion: "7", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{NodeName: "n2", ServiceAccountName: "web"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.2.5", PodIPs: []corev1.PodIP{{IP: "10.244.2.5"}}},
	}
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("transformed pod (-want +got):\n%s", diff)
	}
	tomb := cache.DeletedFinalStateUnknown{Key: "shop/web-1"}
	if got, _ := remotePod(tomb); got != tomb {
		t.Errorf("a tombstone must pass unchanged, got %#v", got)
	}
}
