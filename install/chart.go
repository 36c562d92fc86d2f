package install

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/ignore"
)

// The chart directory is embedded whole ("all:" keeps _helpers.tpl and
// .helmignore); plain helm uses the same directory (helm install nodemesh
// install/chart).
//
//go:embed all:chart
var chartFS embed.FS

// ChartDir is the chart's directory in this package, for tests and helm.
const ChartDir = "chart"

// Chart loads the embedded chart. It leaves out what .helmignore does, as
// Helm's directory loader and 'helm package' do: crds/ is also a Go package
// (install/chart/crds), whose source is not part of the chart.
func Chart() (*chart.Chart, error) {
	ignoreFile, err := chartFS.ReadFile(path.Join(ChartDir, ignore.HelmIgnore))
	if err != nil {
		return nil, fmt.Errorf("read embedded chart: %w", err)
	}
	rules, err := ignore.Parse(bytes.NewReader(ignoreFile))
	if err != nil {
		return nil, fmt.Errorf("read embedded chart's %s: %w", ignore.HelmIgnore, err)
	}
	rules.AddDefaults()
	var files []*loader.BufferedFile
	err = fs.WalkDir(chartFS, ChartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == ChartDir {
			return err
		}
		rel, _ := strings.CutPrefix(p, ChartDir+"/")
		info, err := d.Info()
		if err != nil {
			return err
		}
		if rules.Ignore(rel, info) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		data, err := chartFS.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: path.Clean(rel), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read embedded chart: %w", err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("load embedded chart: %w", err)
	}
	return c, nil
}
