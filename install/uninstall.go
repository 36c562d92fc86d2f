package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodemesh/nodemesh/api"
)

// UninstallOptions configure Uninstall.
type UninstallOptions struct {
	// Purge also deletes nodemesh's CRDs — and with them every Identity and
	// TrafficPolicy — and the namespace, if nodemesh created it.
	Purge bool
	// CleanupTimeout bounds the wait for the agents' NodeCleaned answers.
	CleanupTimeout time.Duration
	Timeout        time.Duration
	Out            io.Writer
}

// UninstallResult says what Uninstall did.
type UninstallResult struct {
	// Cleaned are the nodes whose agent confirmed the cleanup; Unconfirmed
	// those that did not answer in time (their programs, pins and CNI
	// configuration may still be there: 'nodemesh-agent cleanup' on the
	// node removes them).
	Cleaned, Unconfirmed []string
	ReleaseRemoved       bool
	CRDsDeleted          []string
	// CRDsTerminating are deleted CRDs the API server had not finished
	// removing when the wait ended, each with the reason it gives; it
	// finishes on its own.
	CRDsTerminating  []string
	NamespaceDeleted bool
	// CABundlesDeleted counts the copies of the CA bundle the controller
	// published in other namespaces (controller.xds.caBundleInAllNamespaces).
	CABundlesDeleted int
}

// Uninstall deletes the agent DaemonSet first, so that every agent cleans
// its node as it stops, waits for their answers, then deletes the
// release's objects, and with Purge the CRDs and namespace.
func (c *Client) Uninstall(ctx context.Context, ch *chart.Chart, o UninstallOptions) (*UninstallResult, error) {
	res := &UninstallResult{}
	_, err := c.Current()
	installed := err == nil
	if err != nil && !errors.Is(err, ErrNotInstalled) {
		return nil, err
	}
	if !installed && !o.Purge {
		return nil, err
	}
	if installed {
		if err := c.cleanNodes(ctx, o, res); err != nil {
			return res, err
		}
		un := action.NewUninstall(c.Helm)
		un.Timeout = orDuration(o.Timeout, 5*time.Minute)
		// Background: the API server's garbage collector removes the pods;
		// foreground deletion would wait on it.
		un.DeletionPropagation = "background"
		if _, err := un.Run(c.Release); err != nil {
			return res, fmt.Errorf("uninstall release %s: %w", c.Release, err)
		}
		res.ReleaseRemoved = true
		// The controller is gone: the copies of its CA bundle it kept in
		// every namespace would otherwise stay for good (helm never knew
		// them).
		if res.CABundlesDeleted, err = c.deleteCABundles(ctx); err != nil {
			return res, err
		}
	}
	if !o.Purge {
		return res, nil
	}
	names, err := ChartCRDNames(ch)
	if err != nil {
		return res, err
	}
	terminating, err := c.deleteCRDs(ctx, names)
	if err != nil {
		return res, err
	}
	res.CRDsDeleted = names
	res.CRDsTerminating = terminating
	ns, err := c.Kube.CoreV1().Namespaces().Get(ctx, c.Namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return res, fmt.Errorf("get namespace %s: %w", c.Namespace, err)
	case ns.Labels[CreatedByLabel] == CreatedByValue:
		if err := c.Kube.CoreV1().Namespaces().Delete(ctx, c.Namespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return res, fmt.Errorf("delete namespace %s: %w", c.Namespace, err)
		}
		res.NamespaceDeleted = true
	}
	return res, nil
}

// deleteCABundles deletes the CA bundle ConfigMaps nodemesh published
// outside the release namespace (by name and nodemesh's label: a
// same-named ConfigMap of someone else stays).
func (c *Client) deleteCABundles(ctx context.Context) (int, error) {
	cms, err := c.Kube.CoreV1().ConfigMaps(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", api.CABundleConfigMap).String(),
		LabelSelector: api.PartOfLabel + "=" + api.PartOfValue,
	})
	if err != nil {
		return 0, fmt.Errorf("list the published CA bundles (ConfigMaps %s): %w", api.CABundleConfigMap, err)
	}
	n := 0
	for _, cm := range cms.Items {
		if cm.Namespace == c.Namespace {
			continue // the release's own, which helm removed (or keeps)
		}
		err := c.Kube.CoreV1().ConfigMaps(cm.Namespace).Delete(ctx, cm.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return n, fmt.Errorf("delete ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
		}
		n++
	}
	return n, nil
}

// cleanNodes deletes the agent DaemonSet and waits until the agent of
// every node it ran on has answered, or CleanupTimeout. Deleting its
// DaemonSet is what makes an agent remove nodemesh from its node: the only
// signal the agents take for an uninstall (docs/design/agent.md,
// "Uninstall: node cleanup"). It is deleted before the rest of the release
// so that the agents keep their API access while they stop: to read that
// their DaemonSet is being deleted and to record their NodeCleaned Events
// on it, which this waits for. Background propagation: the DaemonSet goes
// at once and the garbage collector deletes its pods, whose agents get
// SIGTERM; foreground would keep the DaemonSet until every pod is gone,
// forever for a node whose kubelet is down, and the answers are per node
// anyway.
func (c *Client) cleanNodes(ctx context.Context, o UninstallOptions, res *UninstallResult) error {
	ds, err := c.Kube.AppsV1().DaemonSets(c.Namespace).Get(ctx, api.AgentName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the agent DaemonSet: %w", err)
	}
	pods, err := c.Kube.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + api.AgentName})
	if err != nil {
		return fmt.Errorf("list agents: %w", err)
	}
	want := map[string]bool{}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" && p.DeletionTimestamp == nil && metav1.IsControlledBy(&p, ds) {
			want[p.Spec.NodeName] = true
		}
	}
	bg := metav1.DeletePropagationBackground
	err = c.Kube.AppsV1().DaemonSets(c.Namespace).Delete(ctx, api.AgentName, metav1.DeleteOptions{
		PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &ds.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete the agent DaemonSet: %w", err)
	}
	if len(want) == 0 {
		return nil
	}
	progress(o.Out, "deleted the agent DaemonSet: the agents on %d nodes remove nodemesh's programs, pins and CNI configuration as they stop", len(want))
	deadline := time.Now().Add(orDuration(o.CleanupTimeout, time.Minute))
	for {
		done, err := c.cleanedNodes(ctx, ds.UID)
		if err != nil {
			return err
		}
		var missing []string
		for n := range want {
			if !done[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			for n := range want {
				if done[n] {
					res.Cleaned = append(res.Cleaned, n)
				}
			}
			sort.Strings(res.Cleaned)
			sort.Strings(missing)
			res.Unconfirmed = missing
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// cleanedNodes are the nodes whose agent recorded NodeCleaned on the
// DaemonSet of UID uid.
func (c *Client) cleanedNodes(ctx context.Context, uid types.UID) (map[string]bool, error) {
	sel := fields.AndSelectors(
		fields.OneTermEqualSelector("involvedObject.uid", string(uid)),
		fields.OneTermEqualSelector("reason", api.NodeCleanedReason),
	).String()
	evs, err := c.Kube.CoreV1().Events(c.Namespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("list cleanup answers: %w", err)
	}
	done := map[string]bool{}
	for _, e := range evs.Items {
		if e.Source.Host != "" {
			done[e.Source.Host] = true
		}
		if e.ReportingInstance != "" {
			done[e.ReportingInstance] = true
		}
	}
	return done, nil
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}
