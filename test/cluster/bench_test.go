//go:build linux

package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// BenchmarkPodStart: 50 pods created at once on one node of the running
// local cluster (make bench-cluster brings it up and installs nodemesh),
// each timed from its creation to the moment its Ready condition is seen:
// the kubelet, containerd and runc starting the sandbox, the kubelet's
// CNI ADD to nodemesh-cni (the agent: veth, address, routes, eBPF
// programs and maps) and the container. p50 and p99 in milliseconds.
func BenchmarkPodStart(b *testing.B) {
	if os.Getenv("NODEMESH_CLUSTER") == "" {
		b.Skip("needs the local cluster up with nodemesh installed: make bench-cluster")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(root, "_output/cluster/kubeconfig"))
	if err != nil {
		b.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	kube := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	const pods, node = 50, "node-a"
	image := "ghcr.io/nodemesh/pause:" + envOr("VERSION", version)
	var all []time.Duration
	for i := 0; i < b.N; i++ {
		ns := fmt.Sprintf("bench-podstart-%d", time.Now().UnixNano()%1_000_000)
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		w, err := kube.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		created := map[string]time.Time{}
		for j := 0; j < pods; j++ {
			name := fmt.Sprintf("p%02d", j)
			created[name] = time.Now()
			_, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: image, ImagePullPolicy: corev1.PullIfNotPresent}}}},
				metav1.CreateOptions{})
			if err != nil {
				b.Fatal(err)
			}
		}
		ready := map[string]time.Duration{}
		timeout := time.After(5 * time.Minute)
		for len(ready) < pods {
			select {
			case ev := <-w.ResultChan():
				p, ok := ev.Object.(*corev1.Pod)
				if !ok || ev.Type == watch.Deleted {
					continue
				}
				if _, done := ready[p.Name]; done {
					continue
				}
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
						ready[p.Name] = time.Since(created[p.Name])
					}
				}
			case <-timeout:
				b.Fatalf("%d of %d pods ready after 5 minutes", len(ready), pods)
			}
		}
		w.Stop()
		for _, d := range ready {
			all = append(all, d)
		}
		b.StopTimer()
		kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		b.StartTimer()
	}
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(len(all)), "pods")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
