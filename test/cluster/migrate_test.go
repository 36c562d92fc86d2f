//go:build linux

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/internal/testapp"
)

// bookinfo is a bookinfo-like app of nodemesh-testapp chain services:
// productpage → details, productpage → reviews → ratings.
func bookinfo(ns, image string) string {
	services := []struct{ name, version, upstreams string }{
		{"productpage", "v1", `, "--upstream=http://details:9080/", "--upstream=http://reviews:9080/"`},
		{"details", "v1", ""},
		{"reviews", "v2", `, "--upstream=http://ratings:9080/"`},
		{"ratings", "v1", ""},
	}
	var b strings.Builder
	for _, s := range services {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: %[3]s}
spec:
  selector: {app: %[1]s}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s-%[2]s, namespace: %[3]s}
spec:
  selector: {matchLabels: {app: %[1]s, version: %[2]s}}
  template:
    metadata: {labels: {app: %[1]s, version: %[2]s}}
    spec:
      containers:
      - name: %[1]s
        image: %[4]s
        imagePullPolicy: IfNotPresent
        args: ["chain", "--name=%[1]s", "--version=%[2]s"%[5]s]
        ports: [{containerPort: 9080}]
        readinessProbe: {httpGet: {path: /healthz, port: 9080}, periodSeconds: 2}
`, s.name, s.version, ns, image, s.upstreams)
	}
	return b.String()
}

// detailsPolicy opens details to the shop's own principal only.
const detailsPolicy = `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: details-from-shop, namespace: shop}
spec:
  selector: {matchLabels: {app: details}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/default"]}}], to: [{operation: {ports: ["9080"]}}]}]
`

// testMigration moves the bookinfo-like app, deployed with (stand-in)
// sidecars on real nodes, with 'nodemesh migrate apply', then back with
// 'migrate rollback'.
func testMigration(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(root, "_output/cluster/kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(cfg)
	// Istio's injector stands in (no istiod image exists here): it adds an
	// istio-proxy container running the pause image. The kubelet starts and
	// restarts the pods, the CNI networks them, the node proxy stand-in
	// carries the migrated traffic.
	defer kubetest.StartSidecarInjector(t, kube, "ghcr.io/nodemesh/pause:"+version)()
	const ns = "shop"
	manifest := filepath.Join(t.TempDir(), "bookinfo.yaml")
	app := "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n" +
		bookinfo(ns, "ghcr.io/nodemesh/nodemesh-testapp:"+version) + detailsPolicy
	if err := os.WriteFile(manifest, []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(kubeBin(t), "kubectl")
	must(t, time.Minute, kubectl, "apply", "-f", manifest)
	must(t, 3*time.Minute, kubectl, "-n", ns, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=170s")
	sidecars := func() (with, total int) {
		pods, err := kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
				continue
			}
			total++
			for _, c := range p.Spec.Containers {
				if c.Name == "istio-proxy" {
					with++
				}
			}
		}
		return with, total
	}
	if with, total := sidecars(); with != 4 || total != 4 {
		t.Fatalf("before the migration: %d of %d pods with sidecars, want 4 of 4", with, total)
	}

	// While the namespace moves, a client the AuthorizationPolicy refuses
	// (a pod of namespace outside) calls details, and one it allows (the
	// shop's productpage, called from outside) does too. The (stand-in)
	// sidecars enforce nothing, so before the move the refused client gets
	// through where Istio's sidecar would refuse it; what is checked is
	// that no details pod the migration started — enforced by nodemesh —
	// ever answers it, from the first moment it serves.
	withSidecar := map[string]bool{}
	if pods, err := kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			withSidecar[p.Name] = true
		}
	} else {
		t.Fatal(err)
	}
	refused := startProber(t, "outside", "on-node-a", "http://details.shop:9080/")
	allowed := startProber(t, "outside", "on-node-b", "http://productpage.shop:9080/")
	refused.waitFor(t, 3)

	out := must(t, 10*time.Minute, "bin/nodemesh", "migrate", "apply", "-n", ns, "--yes")
	t.Logf("migrate apply:\n%s", out)
	refused.waitFor(t, 10)
	allowed.waitFor(t, 5)
	checkProbesDuringMigration(t, withSidecar, refused.stop(), allowed.stop())
	// The probe's requests are in the node proxy's own record.
	if !strings.Contains(out, "through the node proxy (stand-in:") {
		t.Errorf("migrate apply did not prove the requests went through the node proxy:\n%s", out)
	}
	if with, total := sidecars(); with != 0 || total != 4 {
		t.Errorf("after the migration: %d of %d pods with sidecars, want 0 of 4", with, total)
	}
	nsObj, err := kube.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nsObj.Labels["istio.io/dataplane-mode"] != "nodemesh" {
		t.Errorf("namespace labels after the migration: %v", nsObj.Labels)
	}

	// The AuthorizationPolicy moved with the namespace: the shop's own
	// pods reach details (the probe did, and productpage's call does), a
	// pod of another namespace is refused — by nodemesh now, in eBPF.
	fromOutside := func() error {
		out, err := run(t, time.Minute, kubectl, "-n", "outside", "exec", "on-node-a", "--", "curl", "-sS", "--connect-timeout", "2", "--max-time", "4",
			"http://details.shop:9080/")
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
		}
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for fromOutside() == nil {
		if time.Now().After(deadline) {
			t.Error("after the migration a pod of namespace outside still reaches details, which the AuthorizationPolicy opens to the shop's own principal only")
			break
		}
		time.Sleep(time.Second)
	}
	out, err = run(t, time.Minute, kubectl, "-n", "outside", "exec", "on-node-b", "--", "curl", "-sS", "--max-time", "10", "http://productpage.shop:9080/")
	var page testapp.ChainResponse
	if err == nil {
		err = json.Unmarshal([]byte(out), &page)
	}
	detailsAnswered := slices.ContainsFunc(page.Upstreams, func(u testapp.UpstreamResult) bool {
		return u.Status == 200 && u.Response != nil && u.Response.Service == "details"
	})
	if err != nil || !detailsAnswered {
		t.Errorf("productpage (allowed to call details) after the migration: %v\n%s", err, out)
	}

	out = must(t, 10*time.Minute, "bin/nodemesh", "migrate", "rollback", "-n", ns, "--yes")
	t.Logf("migrate rollback:\n%s", out)
	if with, total := sidecars(); with != 4 || total != 4 {
		t.Errorf("after the rollback: %d of %d pods with sidecars, want 4 of 4", with, total)
	}
	must(t, 2*time.Minute, kubectl, "delete", "namespace", ns, "--wait=true", "--timeout=100s")
}

// kubeBin is where hack/kube-build.sh put kubectl.
func kubeBin(t *testing.T) string {
	t.Helper()
	out := must(t, 10*time.Minute, "hack/kube-build.sh")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// checkProbesDuringMigration: no pod without a sidecar (a pod the
// migration made, enforced by nodemesh) answered the refused client, the
// refused client's last requests all failed, and the allowed client kept
// reaching details through productpage.
func checkProbesDuringMigration(t *testing.T, withSidecar map[string]bool, refused, allowed []probeAnswer) {
	t.Helper()
	bySidecar, failed, byMigrated := 0, 0, 0
	for _, a := range refused {
		switch {
		case a.response == nil:
			failed++
		case withSidecar[a.response.Pod]:
			bySidecar++ // the stand-in sidecar enforces nothing (see above)
		default:
			if byMigrated++; byMigrated <= 3 {
				t.Errorf("%s: migrated pod %s answered a client the AuthorizationPolicy refuses", a.at.Format(time.TimeOnly), a.response.Pod)
			}
		}
	}
	if byMigrated > 3 {
		t.Errorf("… %d answers in all from migrated pods to the refused client", byMigrated)
	}
	for _, a := range refused[max(0, len(refused)-10):] {
		if a.response != nil {
			t.Errorf("%s: after the migration, %s answered a client the AuthorizationPolicy refuses", a.at.Format(time.TimeOnly), a.response.Pod)
		}
	}
	for _, a := range refused {
		if a.response == nil {
			t.Logf("refused: %s: %s", a.at.Format(time.TimeOnly), a.failure)
			break
		}
	}
	if failed == 0 {
		t.Errorf("the refused client was never refused in %d requests", len(refused))
	}
	reached := 0
	for _, a := range allowed {
		if a.response != nil && slices.ContainsFunc(a.response.Upstreams, func(u testapp.UpstreamResult) bool {
			return u.Status == 200 && u.Response != nil && u.Response.Service == "details"
		}) {
			reached++
		}
	}
	t.Logf("during the migration: refused client %d requests (%d answered by sidecar pods, %d refused); allowed client reached details %d of %d times",
		len(refused), bySidecar, failed, reached, len(allowed))
	for _, a := range allowed[max(0, len(allowed)-5):] {
		if a.response == nil || !slices.ContainsFunc(a.response.Upstreams, func(u testapp.UpstreamResult) bool {
			return u.Status == 200 && u.Response != nil && u.Response.Service == "details"
		}) {
			t.Errorf("%s: after the migration the allowed client did not reach details: %+v %s", a.at.Format(time.TimeOnly), a.response, a.failure)
		}
	}
}
