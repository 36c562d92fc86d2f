package install

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/api"
)

// TestNodeProxyValues: envoy.enabled=false renders no node proxy at all;
// envoy.standIn.enabled runs nodemesh's L4 stand-in (the test app's
// node-proxy, no Envoy bootstrap) in the Envoy DaemonSet's place;
// k8sServiceHost points the agent and the controller at the API server.
func TestNodeProxyValues(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	render := func(vals map[string]any) (envoy *appsv1.DaemonSet, agent *corev1.Container, controller *corev1.Container) {
		t.Helper()
		out, err := Render(c, RenderOptions{Values: vals})
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range decodeAll(t, out) {
			switch o := obj.(type) {
			case *appsv1.DaemonSet:
				switch o.Name {
				case api.EnvoyName:
					envoy = o
				case api.AgentName:
					agent = &o.Spec.Template.Spec.Containers[0]
				}
			case *appsv1.Deployment:
				controller = &o.Spec.Template.Spec.Containers[0]
			}
		}
		return envoy, agent, controller
	}
	if envoy, _, _ := render(nil); envoy == nil || envoy.Spec.Template.Spec.Containers[0].Command[0] != "envoy" {
		t.Fatalf("default: the node proxy is not Envoy: %+v", envoy)
	}
	if envoy, _, _ := render(map[string]any{"envoy": map[string]any{"enabled": false}}); envoy != nil {
		t.Errorf("envoy.enabled=false still renders the %s DaemonSet", api.EnvoyName)
	}
	envoy, _, _ := render(map[string]any{"envoy": map[string]any{"standIn": map[string]any{"enabled": true}}})
	if envoy == nil {
		t.Fatal("envoy.standIn.enabled renders no node proxy")
	}
	spec := envoy.Spec.Template.Spec
	if ctr := spec.Containers[0]; len(ctr.Command) != 0 || len(ctr.Args) == 0 || ctr.Args[0] != "node-proxy" ||
		ctr.Image != "ghcr.io/nodemesh/nodemesh-testapp:"+c.Metadata.AppVersion || ctr.ReadinessProbe.HTTPGet.Port.IntValue() != api.EnvoyStatsPort {
		t.Errorf("stand-in container: %+v", ctr)
	}
	if len(spec.InitContainers) != 0 || !spec.HostNetwork {
		t.Errorf("stand-in: init containers %d (want none: no Envoy bootstrap), hostNetwork %v", len(spec.InitContainers), spec.HostNetwork)
	}
	_, agent, controller := render(map[string]any{"k8sServiceHost": "172.30.0.1", "k8sServicePort": 6443})
	for name, ctr := range map[string]*corev1.Container{"agent": agent, "controller": controller} {
		want := []corev1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: "172.30.0.1"}, {Name: "KUBERNETES_SERVICE_PORT", Value: "6443"}}
		for _, w := range want {
			if !slices.Contains(ctr.Env, w) {
				t.Errorf("%s: env %v lacks %v", name, ctr.Env, w)
			}
		}
	}
	if _, agent, _ := render(nil); slices.ContainsFunc(agent.Env, func(e corev1.EnvVar) bool { return e.Name == "KUBERNETES_SERVICE_HOST" }) {
		t.Errorf("default: the agent's API server address is overridden: %v", agent.Env)
	}
}
