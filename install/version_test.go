package install

import (
	"regexp"
	"slices"
	"testing"

	"github.com/nodemesh/nodemesh/api"
)

var imageLine = regexp.MustCompile(`(?m)^\s+image: "?([^"\s]+)"?$`)

// renderedImages are the images of the rendered chart's containers.
func renderedImages(t *testing.T, version string) []string {
	t.Helper()
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	WithAppVersion(c, version)
	out, err := Render(c, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var imgs []string
	for _, m := range imageLine.FindAllStringSubmatch(out, -1) {
		if !slices.Contains(imgs, m[1]) {
			imgs = append(imgs, m[1])
		}
	}
	return imgs
}

// TestChartImages: the chart deploys nodemesh's images by the references
// 'make images' tags them with (api.ImageRef) at the CLI's version; a build
// without a version keeps the chart's appVersion.
func TestChartImages(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ version, tag string }{
		"a release":       {version: "v0.3.1", tag: "v0.3.1"},
		"git describe":    {version: "0a13138-dirty", tag: "0a13138-dirty"},
		"no version: dev": {version: "dev", tag: c.Metadata.AppVersion},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			imgs := renderedImages(t, tc.version)
			for _, want := range []string{api.ImageRef(api.ControllerImage, tc.tag), api.ImageRef(api.AgentImage, tc.tag)} {
				if !slices.Contains(imgs, want) {
					t.Errorf("the chart's images %v, want %s", imgs, want)
				}
			}
		})
	}
}
