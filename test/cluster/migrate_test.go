//go:build linux

package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The stand-in for Istio's sidecar injector: no istiod image exists here,
// so a mutating webhook served by this test adds an istio-proxy container
// (the pause image: it only has to run) to pods of namespaces labelled
// istio-injection=enabled, as istiod's injector does. Everything else is
// real: the kubelet starts and restarts the pods, the CNI networks them,
// the node proxy stand-in carries the migrated traffic.
func startInjector(t *testing.T, kube kubernetes.Interface, sidecarImage string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "injector"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // the API server runs in this network namespace
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inject(w, r, sidecarImage)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	url := "https://" + ln.Addr().String() + "/inject"
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	ctx := context.Background()
	_, err = kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "sidecar-injector.istio.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"istio-injection": "enabled"}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), "istio-sidecar-injector", metav1.DeleteOptions{})
	})
}

func inject(w http.ResponseWriter, r *http.Request, image string) {
	body, _ := io.ReadAll(r.Body)
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "bad review", http.StatusBadRequest)
		return
	}
	var pod corev1.Pod
	json.Unmarshal(review.Request.Object.Raw, &pod)
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	has := false
	for _, c := range pod.Spec.Containers {
		has = has || c.Name == "istio-proxy"
	}
	if !has && pod.Labels["sidecar.istio.io/inject"] != "false" {
		patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/containers/-",
			"value": corev1.Container{Name: "istio-proxy", Image: image, ImagePullPolicy: corev1.PullIfNotPresent}}})
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	review.Response, review.Request = resp, nil
	json.NewEncoder(w).Encode(&review)
}

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

// testMigration moves the bookinfo-like app, deployed with (stand-in)
// sidecars on real nodes, with 'nodemesh migrate apply', then back with
// 'migrate rollback'.
func testMigration(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(root, "_output/cluster/kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(cfg)
	startInjector(t, kube, "ghcr.io/nodemesh/pause:"+version)
	const ns = "shop"
	manifest := filepath.Join(t.TempDir(), "bookinfo.yaml")
	app := "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n" +
		bookinfo(ns, "ghcr.io/nodemesh/nodemesh-testapp:"+version)
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

	out := must(t, 10*time.Minute, "bin/nodemesh", "migrate", "apply", "-n", ns, "--yes")
	t.Logf("migrate apply:\n%s", out)
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
