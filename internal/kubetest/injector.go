package kubetest

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
	"io"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
)

// StartSidecarInjector stands in for Istio's sidecar injector, where no
// istiod can run: a mutating webhook served by the test binary on
// 127.0.0.1 (the API server's network namespace) adds an istio-proxy
// container with image to Pods created in namespaces labelled
// istio-injection=enabled — unless the pod says sidecar.istio.io/inject:
// "false" — as istiod's injector does (the container only: its other
// changes do not matter to nodemesh). stop removes it; a suite that shares
// it between tests (one API server for the package) never calls it.
func StartSidecarInjector(t testing.TB, kube kubernetes.Interface, image string) (stop func()) {
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { inject(w, r, image) }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}}
	go srv.ServeTLS(ln, "", "")
	url := "https://" + ln.Addr().String() + "/inject"
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	name := "istio-sidecar-injector"
	_, err = kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(context.Background(), &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "sidecar-injector.istio.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{api.IstioInjectionLabel: api.IstioInjectionEnabled}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	return func() {
		kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), name, metav1.DeleteOptions{})
		srv.Close()
	}
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
		has = has || c.Name == api.IstioProxyContainer
	}
	if !has && pod.Labels[api.SidecarInjectLabel] != "false" {
		patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/containers/-",
			"value": corev1.Container{Name: api.IstioProxyContainer, Image: image, ImagePullPolicy: corev1.PullIfNotPresent}}})
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	review.Response, review.Request = resp, nil
	json.NewEncoder(w).Encode(&review)
}
