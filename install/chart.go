package install

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
)

// The chart directory is embedded whole ("all:" keeps _helpers.tpl and
// .helmignore); plain helm uses the same directory (helm install nodemesh
// install/chart).
//
//go:embed all:chart
var chartFS embed.FS

// ChartDir is the chart's directory in this package, for tests and helm.
const ChartDir = "chart"

// Default names.
const (
	DefaultNamespace   = "nodemesh-system"
	DefaultReleaseName = "nodemesh"
	// OptInLabel and OptInValue opt a namespace in; a pod opts out with
	// the same label set to OptOutValue.
	OptInLabel  = "istio.io/dataplane-mode"
	OptInValue  = "nodemesh"
	OptOutValue = "none"
)

// Component names: the Deployment, DaemonSets, ServiceAccounts and the
// controller's Service are named after them (see the chart's _helpers.tpl).
const (
	ControllerName = "nodemesh-controller"
	AgentName      = "nodemesh-agent"
	EnvoyName      = "nodemesh-envoy"
)

// Chart loads the embedded chart.
func Chart() (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(chartFS, ChartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := chartFS.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := strings.CutPrefix(p, ChartDir+"/")
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
