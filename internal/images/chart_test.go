package images

import (
	"regexp"
	"slices"
	"testing"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/install"
)

// TestChartAgrees: 'nodemesh install' of a build (the embedded chart with
// the build's version as its appVersion) deploys exactly the controller and
// agent images 'make images' of the same version wrote.
func TestChartAgrees(t *testing.T) {
	imgs, _ := buildAll(t)
	c, err := install.Chart()
	if err != nil {
		t.Fatal(err)
	}
	install.WithAppVersion(c, testVersion)
	out, err := install.Render(c, install.RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rendered []string
	for _, m := range regexp.MustCompile(`(?m)^\s+image: "?([^"\s]+)"?$`).FindAllStringSubmatch(out, -1) {
		rendered = append(rendered, m[1])
	}
	for _, n := range []string{api.ControllerImage, api.AgentImage} {
		ref := find(t, imgs, n).Ref
		if !slices.Contains(rendered, ref) {
			t.Errorf("make images wrote %s; the chart deploys %v", ref, rendered)
		}
	}
}
