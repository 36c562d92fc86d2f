package install

import (
	"context"
	"errors"
	"fmt"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"
)

// chartCRDs decodes the chart's crds/ directory.
func chartCRDs(c *chart.Chart) ([]*apiextv1.CustomResourceDefinition, error) {
	var out []*apiextv1.CustomResourceDefinition
	for _, f := range c.CRDObjects() {
		crd := &apiextv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(f.File.Data, crd); err != nil {
			return nil, fmt.Errorf("chart CRD %s: %w", f.Filename, err)
		}
		out = append(out, crd)
	}
	return out, nil
}

// existingCRDs reports which of the chart's CRDs are on the cluster.
func (c *Client) existingCRDs(ctx context.Context, crds []*apiextv1.CustomResourceDefinition) (map[string]bool, error) {
	have := map[string]bool{}
	for _, crd := range crds {
		_, err := c.CRDs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
		switch {
		case err == nil:
			have[crd.Name] = true
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("get CRD %s: %w", crd.Name, err)
		}
	}
	return have, nil
}

// applyCRDs creates or updates the chart's CRDs and waits until they are
// established. Helm installs crds/ on install but never upgrades them;
// upgrade calls this so that a new chart's schema reaches the cluster.
func (c *Client) applyCRDs(ctx context.Context, crds []*apiextv1.CustomResourceDefinition) error {
	api := c.CRDs.ApiextensionsV1().CustomResourceDefinitions()
	for _, crd := range crds {
		existing, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = api.Create(ctx, crd, metav1.CreateOptions{})
		case err == nil:
			crd = crd.DeepCopy()
			crd.ResourceVersion = existing.ResourceVersion
			_, err = api.Update(ctx, crd, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("apply CRD %s: %w", crd.Name, err)
		}
	}
	for _, crd := range crds {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", crd.Name, err)
		}
	}
	return nil
}

// deleteCRDs deletes CRDs by name (and with them every object of their
// kinds) and waits until they are gone; missing ones are fine.
func (c *Client) deleteCRDs(ctx context.Context, names []string) error {
	api := c.CRDs.ApiextensionsV1().CustomResourceDefinitions()
	var errs []error
	for _, n := range names {
		err := api.Delete(ctx, n, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete CRD %s: %w", n, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// The API server deletes the CRD's objects first (its finalizer).
	for _, n := range names {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := api.Get(ctx, n, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("CRD %s not deleted: %w", n, err))
		}
	}
	return errors.Join(errs...)
}
