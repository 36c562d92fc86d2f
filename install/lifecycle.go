package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Labels nodemesh puts on the namespace it creates. Pod Security Admission
// must admit the privileged agent there.
const (
	CreatedByLabel = "app.kubernetes.io/managed-by"
	CreatedByValue = "nodemesh"
	psaEnforce     = "pod-security.kubernetes.io/enforce"
)

// InstallOptions configure Install.
type InstallOptions struct {
	// Values are the user's values (validated against the chart's schema).
	Values map[string]any
	// Timeout bounds Helm's work (and the wait, when Wait is set).
	Timeout time.Duration
	// Wait for every component to be ready, reporting progress to Out.
	Wait bool
	Out  io.Writer
}

// Install installs the chart as a new release. Nothing is sent to the
// cluster before the values pass the schema; when Helm fails part way,
// everything this call created (release, objects, CRDs that were not there
// before, the namespace) is removed again, so a failed install leaves
// nothing behind.
func (c *Client) Install(ctx context.Context, ch *chart.Chart, o InstallOptions) (*release.Release, error) {
	if err := Validate(ch, o.Values); err != nil {
		return nil, err
	}
	if rel, err := c.Current(); err == nil {
		hint := "use 'nodemesh upgrade' to change it"
		if rel.Info.Status != release.StatusDeployed {
			hint = "a previous attempt did not finish: 'nodemesh uninstall' removes it, or 'nodemesh upgrade' retries"
		}
		return nil, fmt.Errorf("%w (%s): %s", ErrAlreadyInstalled, describe(rel), hint)
	} else if !errors.Is(err, ErrNotInstalled) {
		return nil, err
	}
	crds, err := chartCRDs(ch)
	if err != nil {
		return nil, err
	}
	hadCRDs, err := c.existingCRDs(ctx, crds, o.Out)
	if err != nil {
		return nil, err
	}
	createdNS, err := c.ensureNamespace(ctx)
	if err != nil {
		return nil, err
	}
	inst := action.NewInstall(c.Helm)
	inst.ReleaseName = c.Release
	inst.Namespace = c.Namespace
	inst.Timeout = orDuration(o.Timeout, 5*time.Minute)
	// Helm's own wait says nothing about why; Wait below reports progress.
	inst.Wait = false
	rel, err := inst.RunWithContext(ctx, ch, valuesOrEmpty(o.Values))
	if err != nil {
		terminating, uerr := c.undoInstall(context.WithoutCancel(ctx), crds, hadCRDs, createdNS)
		if uerr != nil {
			return nil, fmt.Errorf("install failed: %w; removing what it created failed too: %w", err, uerr)
		}
		if len(terminating) > 0 {
			return nil, fmt.Errorf("install failed, and everything it created was removed (the API server is still finishing the deletion of CRD %s): %w",
				strings.Join(terminating, ", "), err)
		}
		return nil, fmt.Errorf("install failed, and everything it created was removed: %w", err)
	}
	if o.Wait {
		if err := c.Wait(ctx, WaitOptions{Timeout: inst.Timeout, Out: o.Out}); err != nil {
			return rel, err
		}
	}
	return rel, nil
}

// undoInstall removes a failed install's release, objects, new CRDs and
// the namespace it created. It returns the CRDs whose deletion the API
// server has not finished yet (see deleteCRDs).
func (c *Client) undoInstall(ctx context.Context, crds []*apiextv1.CustomResourceDefinition, had map[string]bool, createdNS bool) (terminating []string, err error) {
	var errs []error
	un := action.NewUninstall(c.Helm)
	un.IgnoreNotFound = true
	un.DisableHooks = true
	if _, err := un.Run(c.Release); err != nil && !strings.Contains(err.Error(), "not found") {
		errs = append(errs, err)
	}
	var drop []string
	for _, crd := range crds {
		if !had[crd.Name] {
			drop = append(drop, crd.Name)
		}
	}
	terminating, err = c.deleteCRDs(ctx, drop)
	errs = append(errs, err)
	if createdNS {
		if err := c.Kube.CoreV1().Namespaces().Delete(ctx, c.Namespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return terminating, errors.Join(errs...)
}

// ensureNamespace creates the release namespace if it is missing, labelled
// as nodemesh's (uninstall --purge deletes only such a namespace) and
// admitting privileged pods.
func (c *Client) ensureNamespace(ctx context.Context) (created bool, err error) {
	_, err = c.Kube.CoreV1().Namespaces().Get(ctx, c.Namespace, metav1.GetOptions{})
	if err == nil {
		return false, nil
	}
	if !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("get namespace %s: %w", c.Namespace, err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.Namespace, Labels: map[string]string{
		CreatedByLabel: CreatedByValue, psaEnforce: "privileged",
	}}}
	if _, err := c.Kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return false, fmt.Errorf("create namespace %s: %w", c.Namespace, err)
	}
	return true, nil
}

// UpgradeOptions configure Upgrade.
type UpgradeOptions struct {
	// Values are the values given to this upgrade.
	Values map[string]any
	// ResetValues forgets the values given to earlier installs and
	// upgrades: only Values, over the chart's defaults.
	ResetValues bool
	Timeout     time.Duration
	Wait        bool
	Out         io.Writer
}

// UpgradeResult says what an upgrade did.
type UpgradeResult struct {
	Release *release.Release
	// Values are the user values the release now has (what 'helm get
	// values' shows).
	Values map[string]any
	// Changed are the objects whose rendered manifest changed, added or
	// removed ("DaemonSet nodemesh-system/nodemesh-envoy"), sorted.
	Changed []string
}

// Upgrade moves the release to this chart with reset-then-reuse value
// semantics: the new chart's defaults, then the values the user gave
// before (the release's stored user values, never the old chart's
// defaults), then the values given now. So a default that changed in the
// new chart takes effect unless the user had set it, a value set at install
// survives upgrades, and --reset-values starts over from the defaults.
// The chart's CRDs are applied first (Helm never upgrades crds/).
func (c *Client) Upgrade(ctx context.Context, ch *chart.Chart, o UpgradeOptions) (*UpgradeResult, error) {
	prev, err := c.Current()
	if err != nil {
		if errors.Is(err, ErrNotInstalled) {
			return nil, fmt.Errorf("%w: use 'nodemesh install'", err)
		}
		return nil, err
	}
	vals := valuesOrEmpty(o.Values)
	if !o.ResetValues {
		vals = mergeValues(prev.Config, vals)
	}
	if err := Validate(ch, vals); err != nil {
		return nil, err
	}
	crds, err := chartCRDs(ch)
	if err != nil {
		return nil, err
	}
	if err := c.applyCRDs(ctx, crds, o.Out); err != nil {
		return nil, err
	}
	up := action.NewUpgrade(c.Helm)
	up.Namespace = c.Namespace
	up.Timeout = orDuration(o.Timeout, 5*time.Minute)
	up.MaxHistory = 10
	// The values are complete (computed above): Helm must not merge again.
	up.ResetValues = true
	up.Wait = false
	rel, err := up.RunWithContext(ctx, c.Release, ch, vals)
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	res := &UpgradeResult{Release: rel, Values: vals, Changed: changedObjects(prev.Manifest, rel.Manifest)}
	if o.Wait {
		if err := c.Wait(ctx, WaitOptions{Timeout: up.Timeout, Out: o.Out}); err != nil {
			return res, err
		}
	}
	return res, nil
}

// mergeValues overlays top on a copy of base, key by key (maps merge;
// anything else — lists too — is replaced). A null in top deletes the key,
// as in Helm.
func mergeValues(base, top map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range top {
		if v == nil {
			delete(out, k)
			continue
		}
		if tm, ok := v.(map[string]any); ok {
			if bm, ok := out[k].(map[string]any); ok {
				out[k] = mergeValues(bm, tm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// changedObjects compares two release manifests object by object.
func changedObjects(before, after string) []string {
	index := func(manifest string) map[string]string {
		out := map[string]string{}
		for _, doc := range releaseutil.SplitManifests(manifest) {
			var head struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name      string `json:"name"`
					Namespace string `json:"namespace"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil || head.Kind == "" {
				continue
			}
			id := head.Kind + " " + head.Metadata.Name
			if head.Metadata.Namespace != "" {
				id = head.Kind + " " + head.Metadata.Namespace + "/" + head.Metadata.Name
			}
			out[id] = strings.TrimSpace(doc)
		}
		return out
	}
	a, b := index(before), index(after)
	var changed []string
	for id, doc := range b {
		if old, ok := a[id]; !ok {
			changed = append(changed, id+" (added)")
		} else if old != doc {
			changed = append(changed, id)
		}
	}
	for id := range a {
		if _, ok := b[id]; !ok {
			changed = append(changed, id+" (removed)")
		}
	}
	sort.Strings(changed)
	return changed
}

func valuesOrEmpty(v map[string]any) map[string]any {
	if v == nil {
		return map[string]any{}
	}
	return v
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// ChartCRDNames are the names of the chart's CRDs.
func ChartCRDNames(ch *chart.Chart) ([]string, error) {
	crds, err := chartCRDs(ch)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, c := range crds {
		names = append(names, c.Name)
	}
	return names, nil
}
