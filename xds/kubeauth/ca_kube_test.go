package kubeauth_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/xds/kubeauth"
	"github.com/nodemesh/nodemesh/xds/servingcert"
)

// TestLoadCA: the controller makes its CA in the chart's empty Secret (or
// a Secret it creates when there is none), every later start and every
// racing replica gets that same CA, and a Secret holding something else is
// an error that says how to recover — never silently replaced (node
// proxies trust the CA they hold).
func TestLoadCA(t *testing.T) {
	env := kubetest.Get(t)
	ctx := context.Background()
	for name, chartMade := range map[string]bool{"chart's empty Secret": true, "no Secret": false} {
		t.Run(name, func(t *testing.T) {
			ns := env.Namespace(t, "ca", nil)
			if chartMade {
				if _, err := env.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: api.CASecret}}, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			// Three replicas starting together.
			cas := make([]*servingcert.CA, 3)
			var wg sync.WaitGroup
			for i := range cas {
				wg.Go(func() {
					ca, err := kubeauth.LoadCA(ctx, env.Client, ns, api.CASecret)
					if err != nil {
						t.Error(err)
					}
					cas[i] = ca
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			again, err := kubeauth.LoadCA(ctx, env.Client, ns, api.CASecret)
			if err != nil {
				t.Fatal(err)
			}
			for i, ca := range append(cas, again) {
				if !bytes.Equal(ca.CertPEM, cas[0].CertPEM) {
					t.Errorf("load %d got another CA", i)
				}
			}
		})
	}
	t.Run("Secret with something else", func(t *testing.T) {
		ns := env.Namespace(t, "ca", nil)
		if _, err := env.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: api.CASecret},
			Data: map[string][]byte{api.CASecretCertKey: []byte("not a certificate")}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := kubeauth.LoadCA(ctx, env.Client, ns, api.CASecret)
		if err == nil || !strings.Contains(err.Error(), ns+"/"+api.CASecret) || !strings.Contains(err.Error(), "delete the Secret's") {
			t.Fatalf("got %v", err)
		}
		s, _ := env.Client.CoreV1().Secrets(ns).Get(ctx, api.CASecret, metav1.GetOptions{})
		if string(s.Data[api.CASecretCertKey]) != "not a certificate" {
			t.Error("the Secret was overwritten")
		}
	})
}

// TestPublisher: the CA bundle is published in the ConfigMap (created or
// filled), an edit is put back, and an unchanged bundle is not rewritten.
func TestPublisher(t *testing.T) {
	env := kubetest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, "ca", nil)
	ca, err := servingcert.NewCA("test", servingcert.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	is, err := servingcert.NewIssuer(ca, []string{"x"}, nil, servingcert.LeafValidity)
	if err != nil {
		t.Fatal(err)
	}
	p := &kubeauth.Publisher{Client: env.Client, Namespace: ns, Name: api.CABundleConfigMap, Source: is}
	cms := env.Client.CoreV1().ConfigMaps(ns)
	check := func(step string) string {
		t.Helper()
		if err := p.Publish(ctx); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		cm, err := cms.Get(ctx, api.CABundleConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data[api.CABundleKey] != string(ca.CertPEM) {
			t.Errorf("%s: ConfigMap holds %q", step, cm.Data)
		}
		return cm.ResourceVersion
	}
	v1 := check("created")
	if v2 := check("unchanged"); v2 != v1 {
		t.Error("an unchanged bundle was rewritten")
	}
	cm, _ := cms.Get(ctx, api.CABundleConfigMap, metav1.GetOptions{})
	cm.Data[api.CABundleKey] = "tampered"
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("edited")
}
