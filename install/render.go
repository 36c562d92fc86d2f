package install

import (
	"fmt"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"

	"github.com/nodemesh/nodemesh/api"
)

// DefaultKubeVersion is the Kubernetes version a client-side render assumes
// (.Capabilities.KubeVersion and the chart's kubeVersion constraint): the
// minor of the client-go nodemesh is built with. The Helm SDK's own default
// (v1.20) is older than the chart supports.
const DefaultKubeVersion = "v1.37.0"

// RenderOptions configure Render.
type RenderOptions struct {
	ReleaseName string
	Namespace   string
	// Values are the user's values (over the chart's defaults).
	Values map[string]any
	// KubeVersion for the capabilities; DefaultKubeVersion when empty.
	KubeVersion string
	// WithoutCRDs leaves out the chart's crds/ (included by default, as an
	// install applies them).
	WithoutCRDs bool
}

// Render renders the chart without a cluster, as 'helm template
// --include-crds' does: the Helm SDK's client-only dry-run install, its
// manifest, then its hooks. The output is multi-document YAML, the same
// for the same input.
func Render(c *chart.Chart, o RenderOptions) (string, error) {
	if err := Validate(c, o.Values); err != nil {
		return "", err
	}
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.DryRun = true
	inst.DryRunOption = "true"
	inst.ClientOnly = true
	inst.Replace = true
	inst.ReleaseName = orDefault(o.ReleaseName, api.DefaultReleaseName)
	inst.Namespace = orDefault(o.Namespace, api.DefaultNamespace)
	inst.IncludeCRDs = !o.WithoutCRDs
	kv, err := chartutil.ParseKubeVersion(orDefault(o.KubeVersion, DefaultKubeVersion))
	if err != nil {
		return "", fmt.Errorf("kube version %q: %w", o.KubeVersion, err)
	}
	inst.KubeVersion = kv
	vals := o.Values
	if vals == nil {
		vals = map[string]any{}
	}
	rel, err := inst.Run(c, vals)
	if err != nil {
		return "", fmt.Errorf("render chart: %w", err)
	}
	var b strings.Builder
	fmt.Fprintln(&b, strings.TrimSpace(rel.Manifest))
	for _, h := range rel.Hooks {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	return b.String(), nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
