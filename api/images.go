package api

// Images: nodemesh's own images, as 'make images' builds them and the chart
// and the CLI's defaults name them. The chart's values spell the registry and
// the controller's and agent's repositories (install's tests check them
// against these); an image's tag is the nodemesh version, the same string
// stamped into its binaries ('nodemesh version').
const (
	// ImageRegistry and ImageRepository: where the images are published;
	// every image is ImageRepository/<name>:<version>.
	ImageRegistry   = "ghcr.io"
	ImageRepository = ImageRegistry + "/nodemesh"

	ControllerImage = ControllerName
	// AgentImage carries nodemesh-agent and, next to it, the CNI plugin
	// nodemesh-cni, which the agent installs onto the node.
	AgentImage = AgentName
	// TestAppImage is the project's test application: the echo server of
	// 'nodemesh check' (agnhost netexec's endpoints) and the bookinfo-like
	// services of the migration tests.
	TestAppImage = "nodemesh-testapp"
	// CurlImage has curl and a POSIX shell: the clients of 'nodemesh check'
	// and the probe of 'nodemesh migrate apply'.
	CurlImage = "nodemesh-curl"
	// PauseImage is the pod sandbox image of the local cluster's kubelets.
	PauseImage = "pause"
)

// ImageRef is the reference of nodemesh's image name at a version:
// ghcr.io/nodemesh/<name>:<version>.
func ImageRef(name, version string) string {
	return ImageRepository + "/" + name + ":" + version
}
