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
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// NodeCleanedReason is the reason of the Event an agent records on the
// cleanup ConfigMap once it has removed nodemesh from its node; the
// Event's source host (or reporting instance) is the node name.
const NodeCleanedReason = "NodeCleaned"

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
}

// Uninstall asks every agent to clean its node, waits for their answers,
// deletes the release's objects, and with Purge the CRDs and namespace.
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
		// The pre-delete hook's copy of the request outlives the release.
		err := c.Kube.CoreV1().ConfigMaps(c.Namespace).Delete(ctx, CleanupName, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return res, fmt.Errorf("delete the cleanup request: %w", err)
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

// cleanNodes creates the cleanup request and waits until the agent of
// every node it runs on has answered, or CleanupTimeout.
func (c *Client) cleanNodes(ctx context.Context, o UninstallOptions, res *UninstallResult) error {
	pods, err := c.Kube.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + AgentName})
	if err != nil {
		return fmt.Errorf("list agents: %w", err)
	}
	want := map[string]bool{}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
			want[p.Spec.NodeName] = true
		}
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: CleanupName, Namespace: c.Namespace,
		Labels: map[string]string{"app.kubernetes.io/part-of": "nodemesh"}}, Data: map[string]string{"reason": "uninstall"}}
	if _, err := c.Kube.CoreV1().ConfigMaps(c.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("request node cleanup: %w", err)
	}
	if len(want) == 0 {
		return nil
	}
	progress(o.Out, "asked the agents on %d nodes to remove nodemesh's programs, pins and CNI configuration", len(want))
	deadline := time.Now().Add(orDuration(o.CleanupTimeout, time.Minute))
	for {
		done, err := c.cleanedNodes(ctx)
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

// cleanedNodes are the nodes whose agent recorded NodeCleaned.
func (c *Client) cleanedNodes(ctx context.Context) (map[string]bool, error) {
	sel := fields.AndSelectors(
		fields.OneTermEqualSelector("involvedObject.name", CleanupName),
		fields.OneTermEqualSelector("reason", NodeCleanedReason),
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
