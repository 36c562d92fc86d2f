package images

import (
	"fmt"
	"sort"
	"strings"

	"github.com/nodemesh/nodemesh/api"
)

// BinDir is where the Go programs are in the images. The agent finds the
// CNI plugin next to its own executable (nodemesh-agent's --cni-plugin
// default), so both are here.
const BinDir = "/usr/local/bin"

// Users: the distroless "nonroot" user for what runs unprivileged, the
// Kubernetes pause image's for pause. The agent runs as root: it needs
// NET_ADMIN and SYS_ADMIN (api.AgentCapabilities), which the chart adds to a
// root container (a non-root one would hold them only as ambient
// capabilities, which the runtime does not set).
const (
	NonRoot   = "65532:65532"
	PauseUser = "65535:65535"
)

// path is the images' PATH: the check's clients run "sh -c 'curl …'".
const pathEnv = "PATH=/usr/local/bin:/usr/bin:/bin"

// Specs are nodemesh's images at version: the Go programs from bins (by
// name, as GoBuild returns them) and curl from the Debian files.
func Specs(version string, bins map[string]string, curl *DebianFiles) ([]Spec, error) {
	for name := range Packages {
		if bins[name] == "" {
			return nil, fmt.Errorf("no %s binary", name)
		}
	}
	bin := func(name string) File { return File{Path: BinDir + "/" + name, Source: bins[name], Mode: 0o755} }
	labels := func(name, desc string) map[string]string {
		return map[string]string{
			"org.opencontainers.image.title":       name,
			"org.opencontainers.image.description": desc,
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.source":      "https://github.com/nodemesh/nodemesh",
			"org.opencontainers.image.licenses":    "Apache-2.0",
		}
	}
	specs := []Spec{
		{
			Name: api.ControllerImage, Files: []File{bin("nodemesh-controller")},
			Entrypoint: []string{BinDir + "/nodemesh-controller"}, User: NonRoot, Env: []string{pathEnv},
			Labels: labels(api.ControllerImage, "nodemesh's xDS control plane"),
		},
		{
			Name: api.AgentImage, Files: []File{bin("nodemesh-agent"), bin("nodemesh-cni")},
			Entrypoint: []string{BinDir + "/nodemesh-agent"}, Env: []string{pathEnv},
			Labels: labels(api.AgentImage, "nodemesh's node agent, with the CNI plugin it installs onto the node"),
		},
		{
			Name: api.TestAppImage, Files: []File{bin("nodemesh-testapp")},
			Entrypoint: []string{BinDir + "/nodemesh-testapp"}, Cmd: []string{"netexec"}, User: NonRoot, Env: []string{pathEnv},
			Labels: labels(api.TestAppImage, "nodemesh's test application: the check's echo server and the bookinfo-like app"),
		},
		{
			Name: api.PauseImage, Files: []File{{Path: "/pause", Source: bins["pause"], Mode: 0o755}},
			Entrypoint: []string{"/pause"}, User: PauseUser,
			Labels: labels(api.PauseImage, "the pod sandbox of nodemesh's local cluster (Kubernetes' pause behaviour)"),
		},
	}
	if curl != nil {
		l := labels(api.CurlImage, "curl and a POSIX shell (busybox) from Debian's packages, for nodemesh check and the migration probe")
		pkgs := make([]string, 0, len(curl.Packages))
		for p, v := range curl.Packages {
			l["io.nodemesh.debian."+p] = v
			pkgs = append(pkgs, p+"="+v)
		}
		sort.Strings(pkgs)
		l["io.nodemesh.debian.packages"] = strings.Join(pkgs, " ")
		specs = append(specs, Spec{
			Name: api.CurlImage, Files: curl.Files,
			Entrypoint: []string{"/usr/bin/curl"}, User: NonRoot, Env: []string{pathEnv}, Labels: l,
		})
	}
	return specs, nil
}
