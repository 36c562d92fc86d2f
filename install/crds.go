package install

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// existingCRDs reports which of the chart's CRDs are on the cluster. A CRD
// being deleted is waited for first (see awaitTerminatingCRDs): Helm would
// take it for present and skip it, and the install would lose its kinds
// the moment the API server finishes the deletion.
func (c *Client) existingCRDs(ctx context.Context, crds []*apiextv1.CustomResourceDefinition, out io.Writer) (map[string]bool, error) {
	if err := c.awaitTerminatingCRDs(ctx, crds, out); err != nil {
		return nil, err
	}
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

// crdTerminatingWait bounds how long install and upgrade wait for a CRD
// that is being deleted, and how long uninstall waits for the CRDs it
// deletes. The API server usually needs seconds, but a CRD deleted soon
// after it was created can stay Terminating for minutes ("could not list
// instances: storage is (re)initializing" while its storage starts, with
// the finalizer's retries backing off).
var crdTerminatingWait = 2 * time.Minute

// awaitTerminatingCRDs waits until none of the chart's CRDs is being
// deleted, saying on out which one it waits for and why.
func (c *Client) awaitTerminatingCRDs(ctx context.Context, crds []*apiextv1.CustomResourceDefinition, out io.Writer) error {
	api := c.CRDs.ApiextensionsV1().CustomResourceDefinitions()
	for _, crd := range crds {
		got, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("get CRD %s: %w", crd.Name, err)
		}
		if got.DeletionTimestamp == nil {
			continue
		}
		if out != nil {
			fmt.Fprintf(out, "⏳ CRD %s is being deleted (%s): waiting until it is gone\n", crd.Name, terminatingReason(got))
		}
		gone, last, err := c.waitCRDGone(ctx, crd.Name, crdTerminatingWait)
		if err != nil {
			return err
		}
		if !gone {
			return fmt.Errorf("CRD %s is still being deleted after %s (%s): try again once 'kubectl get crd %s' finds nothing",
				crd.Name, crdTerminatingWait, terminatingReason(last), crd.Name)
		}
	}
	return nil
}

// terminatingReason is what the API server says about a CRD's deletion.
func terminatingReason(crd *apiextv1.CustomResourceDefinition) string {
	if crd != nil {
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextv1.Terminating && cond.Message != "" {
				return cond.Reason + ": " + cond.Message
			}
		}
	}
	return "the API server has not started removing it"
}

// waitCRDGone polls until the CRD is not found (gone), the wait is over
// (not gone; last is the CRD as last seen), or ctx ends (an error).
func (c *Client) waitCRDGone(ctx context.Context, name string, timeout time.Duration) (gone bool, last *apiextv1.CustomResourceDefinition, err error) {
	api := c.CRDs.ApiextensionsV1().CustomResourceDefinitions()
	deadline := time.Now().Add(timeout)
	for {
		got, err := api.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return true, nil, nil
		case err != nil:
			return false, nil, fmt.Errorf("get CRD %s: %w", name, err)
		}
		last = got
		if !time.Now().Before(deadline) {
			return false, last, nil
		}
		select {
		case <-ctx.Done():
			return false, last, fmt.Errorf("CRD %s not deleted: %w", name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// applyCRDs creates or updates the chart's CRDs and waits until they are
// established. Helm installs crds/ on install but never upgrades them;
// upgrade calls this so that a new chart's schema reaches the cluster. A
// CRD being deleted is waited for first: updating it would not stop the
// deletion.
func (c *Client) applyCRDs(ctx context.Context, crds []*apiextv1.CustomResourceDefinition, out io.Writer) error {
	if err := c.awaitTerminatingCRDs(ctx, crds, out); err != nil {
		return err
	}
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
// kinds) and waits until they are gone; missing ones are fine. Those the
// API server has not finished removing within crdTerminatingWait are
// returned as terminating, with its reason: their deletion is under way
// and needs nothing more from nodemesh, so it is not an error.
func (c *Client) deleteCRDs(ctx context.Context, names []string) (terminating []string, err error) {
	api := c.CRDs.ApiextensionsV1().CustomResourceDefinitions()
	var errs []error
	for _, n := range names {
		err := api.Delete(ctx, n, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete CRD %s: %w", n, err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// The API server deletes the CRD's objects first (its finalizer).
	deadline := time.Now().Add(crdTerminatingWait)
	for _, n := range names {
		gone, last, err := c.waitCRDGone(ctx, n, time.Until(deadline))
		switch {
		case err != nil:
			errs = append(errs, err)
		case !gone:
			terminating = append(terminating, fmt.Sprintf("%s (%s)", n, terminatingReason(last)))
		}
	}
	return terminating, errors.Join(errs...)
}
