package kubeauth

import (
	"bytes"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
)

// BundleSource gives the CA bundle to publish (servingcert.Source does).
type BundleSource interface {
	CABundle() ([]byte, error)
}

// Publisher keeps the CA bundle that xDS clients verify the controller with
// in ConfigMap Namespace/Name (key api.CABundleKey), which the node
// Envoy DaemonSet mounts: written at startup, then checked every Every (an
// edited or deleted ConfigMap is put back; a renewed CA file is
// published).
type Publisher struct {
	Client          kubernetes.Interface
	Namespace, Name string
	Source          BundleSource
	Every           time.Duration
	// OnError is told of a failed publication (Run keeps trying).
	OnError func(error)
}

// Publish writes the bundle once (no write when it is there already).
func (p *Publisher) Publish(ctx context.Context) error {
	bundle, err := p.Source.CABundle()
	if err != nil {
		return err
	}
	cms := p.Client.CoreV1().ConfigMaps(p.Namespace)
	for range 5 {
		cm, err := cms.Get(ctx, p.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: map[string]string{api.PartOfLabel: api.PartOfValue}},
				Data:       map[string]string{api.CABundleKey: string(bundle)},
			}, metav1.CreateOptions{})
		case err != nil:
		case bytes.Equal([]byte(cm.Data[api.CABundleKey]), bundle):
			return nil
		default:
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			cm.Data[api.CABundleKey] = string(bundle)
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		}
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("publish the CA bundle in ConfigMap %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	return fmt.Errorf("publish the CA bundle in ConfigMap %s/%s: it kept changing", p.Namespace, p.Name)
}

// Run publishes every Every until ctx ends.
func (p *Publisher) Run(ctx context.Context) {
	every := p.Every
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.Publish(ctx); err != nil && p.OnError != nil && ctx.Err() == nil {
				p.OnError(err)
			}
		}
	}
}
