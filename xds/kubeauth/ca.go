package kubeauth

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/xds/servingcert"
)

// LoadCA returns the controller's CA kept in Secret namespace/name
// (api.CASecretCertKey, api.CASecretKeyKey). A Secret that is
// missing, or that has no data (the chart creates it empty, so that the
// controller needs no right to create Secrets), gets a new self-signed CA;
// when replicas race, the first write wins and the others read it back
// (updates carry the resourceVersion they read). A Secret with data that
// is not a valid CA is an error: every node proxy trusts the CA it holds,
// so replacing it is an operator's decision.
func LoadCA(ctx context.Context, client kubernetes.Interface, namespace, name string) (*servingcert.CA, error) {
	secrets := client.CoreV1().Secrets(namespace)
	for range 5 {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("CA Secret %s/%s: %w", namespace, name, err)
		}
		if err == nil && (len(s.Data[api.CASecretCertKey]) > 0 || len(s.Data[api.CASecretKeyKey]) > 0) {
			ca, err := servingcert.ParseCA(s.Data[api.CASecretCertKey], s.Data[api.CASecretKeyKey])
			if err != nil {
				return nil, fmt.Errorf("CA Secret %s/%s: %w (to have a new CA made, delete the Secret's %s and %s; node proxies trust the CA they started with, so restart them afterwards)",
					namespace, name, err, api.CASecretCertKey, api.CASecretKeyKey)
			}
			return ca, nil
		}
		ca, err := servingcert.NewCA(fmt.Sprintf("nodemesh controller CA (%s)", namespace), servingcert.CAValidity)
		if err != nil {
			return nil, err
		}
		data := map[string][]byte{api.CASecretCertKey: ca.CertPEM, api.CASecretKeyKey: ca.KeyPEM}
		if s == nil || s.Name == "" {
			s = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{api.PartOfLabel: api.PartOfValue}},
				Type:       corev1.SecretTypeOpaque,
				Data:       data,
			}
			_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
		} else {
			s.Data = data
			_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
		}
		switch {
		case err == nil:
			return ca, nil
		case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err):
			continue // another replica wrote one: read it
		default:
			return nil, fmt.Errorf("store the CA in Secret %s/%s: %w", namespace, name, err)
		}
	}
	return nil, errors.New("CA Secret " + namespace + "/" + name + ": kept changing while the CA was being stored")
}
