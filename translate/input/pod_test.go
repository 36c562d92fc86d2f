package input

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

func TestPodFrom(t *testing.T) {
	now := metav1.Now()
	full := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews-v1-0", Namespace: "bookinfo", UID: "u1", ResourceVersion: "7",
			Labels: map[string]string{"app": "reviews"}, Annotations: map[string]string{"a": "b"}, DeletionTimestamp: &now},
		Spec: corev1.PodSpec{NodeName: "node-1", HostNetwork: true,
			InitContainers: []corev1.Container{{Name: SidecarContainer}},
			Containers: []corev1.Container{
				{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9080}, {ContainerPort: 9090}}},
				{Name: "metrics", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 15020}}},
			}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionFalse}}},
	}
	p := PodFrom(full)
	if p.Name != "reviews-v1-0" || p.Namespace != "bookinfo" || p.UID != "u1" || p.ResourceVersion != "7" || p.Labels["app"] != "reviews" ||
		p.DeletionTimestamp == nil {
		t.Errorf("metadata: %+v", p)
	}
	if p.NodeName != "node-1" || !p.HostNetwork || p.Phase != corev1.PodRunning || p.Ready != corev1.ConditionFalse || !p.Sidecar {
		t.Errorf("spec/status: %+v", p)
	}
	if len(p.IPs) != 2 || p.IPs[1] != "fd00::1" {
		t.Errorf("IPs %v", p.IPs)
	}
	if port, ok := p.NamedPort("metrics"); !ok || port != 15020 {
		t.Errorf("named port metrics: %d %v", port, ok)
	}
	if _, ok := p.NamedPort(""); ok {
		t.Error("an unnamed port resolves")
	}

	// podIP alone, no Ready condition, a sidecar container.
	bare := PodFrom(&corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: SidecarContainer}}}, Status: corev1.PodStatus{PodIP: "10.0.0.2"}})
	if len(bare.IPs) != 1 || bare.IPs[0] != "10.0.0.2" || bare.Ready != "" || !bare.Sidecar {
		t.Errorf("bare pod: %+v", bare)
	}
	if PodFrom(&corev1.Pod{}).Sidecar {
		t.Error("a pod without containers has a sidecar")
	}
}

// Informers store Pods as input.Pods: they must be runtime.Objects with
// metadata, and copies must not share what a change writes.
func TestPodIsAnInformerObject(t *testing.T) {
	p := PodFrom(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", Labels: map[string]string{"k": "v"}},
		Status: corev1.PodStatus{PodIP: "10.0.0.1"}})
	if key, err := cache.MetaNamespaceKeyFunc(p); err != nil || key != "ns/a" {
		t.Errorf("key %q, %v", key, err)
	}
	if m, err := meta.Accessor(p); err != nil || m.GetName() != "a" || m.GetNamespace() != "ns" || m.GetLabels()["k"] != "v" {
		t.Errorf("metadata through meta.Accessor: %v, %v", m, err)
	}
	if ns, err := cache.MetaNamespaceIndexFunc(p); err != nil || len(ns) != 1 || ns[0] != "ns" {
		t.Errorf("namespace index %v, %v", ns, err)
	}
	if gvk := p.GetObjectKind().GroupVersionKind(); gvk.Kind != "Pod" || gvk.Version != "v1" {
		t.Errorf("kind %v", gvk)
	}
	c := p.DeepCopyObject().(*Pod)
	if !c.Equal(p) {
		t.Fatal("a copy differs")
	}
	c.Labels["k"] = "w"
	c.IPs[0] = "10.0.0.9"
	if p.Labels["k"] != "v" || p.IPs[0] != "10.0.0.1" {
		t.Error("the copy shares labels or addresses")
	}
	if c.Equal(p) {
		t.Error("different pods are equal")
	}
	v := *p
	v.ResourceVersion = "9"
	if !v.Equal(p) {
		t.Error("resource versions count in Equal")
	}
}
