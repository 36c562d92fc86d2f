package install

import "helm.sh/helm/v3/pkg/chart"

// WithAppVersion makes version — the nodemesh build's, which 'make images'
// also tags the images of the same build with — the chart's appVersion, the
// tag of nodemesh's images whose values leave theirs empty. So 'nodemesh
// install' deploys the images of its own version, as cilium-cli does. A
// build without a version ("" or "dev": go build without make's -ldflags)
// leaves the chart's appVersion, the release's.
func WithAppVersion(c *chart.Chart, version string) {
	if version == "" || version == "dev" || c.Metadata == nil {
		return
	}
	c.Metadata.AppVersion = version
}
