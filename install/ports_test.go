package install

import (
	"encoding/json"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/api"
)

// TestChartPorts: the chart spells the ports in its templates; they are
// api's, which the binaries listen on and the datapath redirects to.
func TestChartPorts(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(c, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int32{} // "<workload>/<port name>" → number
	probe := map[string]int32{}
	for _, obj := range decodeAll(t, out) {
		var name string
		var pod corev1.PodSpec
		switch o := obj.(type) {
		case *appsv1.Deployment:
			name, pod = o.Name, o.Spec.Template.Spec
		case *appsv1.DaemonSet:
			name, pod = o.Name, o.Spec.Template.Spec
		case *corev1.Service:
			for _, p := range o.Spec.Ports {
				got["Service "+o.Name+"/"+p.Name] = p.Port
			}
			continue
		default:
			continue
		}
		for _, ctr := range pod.Containers {
			for _, p := range ctr.Ports {
				got[name+"/"+p.Name] = p.ContainerPort
			}
			if ctr.ReadinessProbe != nil && ctr.ReadinessProbe.HTTPGet != nil {
				probe[name] = ctr.ReadinessProbe.HTTPGet.Port.IntVal
			}
		}
	}
	want := map[string]int32{
		api.ControllerName + "/grpc-xds":                        api.XDSPort,
		api.ControllerName + "/http-monitoring":                 api.MonitoringPort,
		"Service " + api.ControllerService + "/grpc-xds":        api.XDSPort,
		"Service " + api.ControllerService + "/http-monitoring": api.MonitoringPort,
		api.EnvoyName + "/tcp-outbound":                         api.OutboundCapturePort,
		api.EnvoyName + "/tcp-inbound":                          api.InboundCapturePort,
		api.EnvoyName + "/http-envoy-prom":                      api.EnvoyStatsPort,
		api.AgentName + "/http-metrics":                         api.AgentMetricsPort,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: port %d, want %d", k, got[k], v)
		}
	}
	if probe[api.EnvoyName] != api.EnvoyAdminPort {
		t.Errorf("node Envoy's readiness probe on %d, want the admin port %d", probe[api.EnvoyName], api.EnvoyAdminPort)
	}

	// The schema refuses an agent metrics port the node's other
	// host-network listeners use.
	var schema struct {
		Properties struct {
			Agent struct {
				Properties struct {
					MetricsPort struct {
						Not struct{ Enum []int32 } `json:"not"`
					} `json:"metricsPort"`
				} `json:"properties"`
			} `json:"agent"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(c.Schema, &schema); err != nil {
		t.Fatal(err)
	}
	taken := schema.Properties.Agent.Properties.MetricsPort.Not.Enum
	slices.Sort(taken)
	hostPorts := []int32{api.EnvoyAdminPort, api.OutboundCapturePort, api.InboundCapturePort, api.HBONEPort, api.XDSPort, api.MonitoringPort, api.EnvoyStatsPort}
	slices.Sort(hostPorts)
	if !slices.Equal(taken, hostPorts) {
		t.Errorf("values.schema.json refuses agent.metricsPort %v, want %v", taken, hostPorts)
	}
}

// renderDefault renders the embedded chart with its default values.
func renderDefault(t *testing.T) string {
	t.Helper()
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(c, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
