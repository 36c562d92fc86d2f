package kubeauth_test

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/xds/kubeauth"
	"github.com/nodemesh/nodemesh/xds/servingcert"
)

// renewable is a Source whose CA the test can swap (a renewed CA).
type renewable struct{ bundle chan []byte }

func (r *renewable) CABundle() ([]byte, error) {
	b := <-r.bundle
	r.bundle <- b
	return b, nil
}

func (r *renewable) set(b []byte) {
	<-r.bundle
	r.bundle <- b
}

// TestNamespacePublisher: every namespace — existing and new — gets the
// CA bundle, skipped namespaces none; a deleted or edited copy is put
// back; a renewed CA reaches every namespace.
func TestNamespacePublisher(t *testing.T) {
	env := kubetest.Get(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca, err := servingcert.NewCA("test", servingcert.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	src := &renewable{bundle: make(chan []byte, 1)}
	src.bundle <- ca.CertPEM

	before := env.Namespace(t, "bundle-before", nil)
	skipped := env.Namespace(t, "bundle-skipped", nil)
	// A name of its own: the test's API server may be shared, and other
	// tests' publishers use api.CABundleConfigMap.
	name := "test-ca-root-cert"
	p := &kubeauth.NamespacePublisher{Client: env.Client, Name: name, Source: src, Every: 2 * time.Second,
		Skip: map[string]bool{skipped: true, "kube-system": true}, OnError: func(err error) { t.Log(err) }}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	holds := func(ns string, want []byte) func() bool {
		return func() bool {
			cm, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
			return err == nil && cm.Data[api.CABundleKey] == string(want) && cm.Labels[api.PartOfLabel] == api.PartOfValue
		}
	}
	eventually := func(step string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30s", step)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	eventually("a namespace that existed before", holds(before, ca.CertPEM))
	after := env.Namespace(t, "bundle-after", nil)
	eventually("a namespace created later", holds(after, ca.CertPEM))

	cms := env.Client.CoreV1().ConfigMaps(before)
	if err := cms.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("deleted, put back", holds(before, ca.CertPEM))
	cm, err := cms.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[api.CABundleKey] = "an attacker's CA"
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("edited, put back", holds(before, ca.CertPEM))

	renewed, err := servingcert.NewCA("test", servingcert.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	src.set(renewed.CertPEM)
	eventually("renewed CA in the first namespace", holds(before, renewed.CertPEM))
	eventually("renewed CA in the second namespace", holds(after, renewed.CertPEM))

	for _, ns := range []string{skipped, "kube-system"} {
		if _, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("skipped namespace %s got the bundle (%v)", ns, err)
		}
	}
	// A namespace being deleted is left alone, and the publisher goes on.
	gone := env.Namespace(t, "bundle-gone", nil)
	eventually("the namespace to delete", holds(gone, renewed.CertPEM))
	if err := env.Client.CoreV1().Namespaces().Delete(ctx, gone, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	last := env.Namespace(t, "bundle-last", nil)
	eventually("a namespace created after a deletion", holds(last, renewed.CertPEM))
}
