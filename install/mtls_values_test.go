package install

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/nodemesh/nodemesh/api"
)

// TestMTLSValues: mtls.enabled=false (the default) renders nothing of the
// workload certificate path. On, the agent's pod gets the sds container
// (the controller image's 'sds', no capabilities, alone in mounting the
// istio-ca token), the node Envoy's bootstrap the sds-grpc cluster on the
// socket both mount from the same host directory, and nothing else reaches
// that directory: not the agent container, not the stand-in proxy.
func TestMTLSValues(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	render := func(vals map[string]any) (agent, envoy *appsv1.DaemonSet) {
		t.Helper()
		if problems := Validate(c, vals); problems != nil {
			t.Fatalf("values refused: %v", problems)
		}
		out, err := Render(c, RenderOptions{Values: vals})
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range decodeAll(t, out) {
			if ds, ok := obj.(*appsv1.DaemonSet); ok {
				switch ds.Name {
				case api.AgentName:
					agent = ds
				case api.EnvoyName:
					envoy = ds
				}
			}
		}
		return agent, envoy
	}
	sdsDir := strings.TrimSuffix(api.SDSSocket, "/socket")
	hostPathOf := func(ds *appsv1.DaemonSet, mountPath string, ctr corev1.Container) string {
		for _, m := range ctr.VolumeMounts {
			if m.MountPath != mountPath {
				continue
			}
			for _, v := range ds.Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.HostPath != nil {
					return v.HostPath.Path
				}
			}
		}
		return ""
	}

	agent, envoy := render(nil)
	if len(agent.Spec.Template.Spec.Containers) != 1 {
		t.Errorf("default: the agent pod has %d containers, want only the agent", len(agent.Spec.Template.Spec.Containers))
	}
	for _, ds := range []*appsv1.DaemonSet{agent, envoy} {
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if strings.Contains(v.Name, "sds") || strings.Contains(v.Name, "istio-ca") {
				t.Errorf("default: %s has volume %s", ds.Name, v.Name)
			}
		}
	}
	if slices.ContainsFunc(envoy.Spec.Template.Spec.InitContainers[0].Args, func(a string) bool { return strings.HasPrefix(a, "--sds-socket") }) {
		t.Error("default: the bootstrap has the SDS cluster")
	}

	agent, envoy = render(map[string]any{"mtls": map[string]any{"enabled": true}})
	spec := agent.Spec.Template.Spec
	var sds *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "sds" {
			sds = &spec.Containers[i]
		}
	}
	if sds == nil {
		t.Fatal("mtls.enabled: no sds container in the agent's pod")
	}
	if sds.Args[0] != "sds" || !slices.Contains(sds.Args, "--socket="+api.SDSSocket) || !slices.Contains(sds.Args, "--allowed-uid=0") ||
		!strings.Contains(sds.Image, "nodemesh-controller") {
		t.Errorf("sds container: image %s, args %v", sds.Image, sds.Args)
	}
	sc := sds.SecurityContext
	if sc == nil || len(sc.Capabilities.Add) != 0 || !slices.Contains(sc.Capabilities.Drop, "ALL") || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem ||
		(sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("sds container security context: %+v", sc)
	}
	// The istio-ca token: a projected, pod-bound token of Istio's
	// audience, mounted into the sds container only.
	var tokenVol string
	for _, v := range spec.Volumes {
		if v.Projected != nil && len(v.Projected.Sources) == 1 && v.Projected.Sources[0].ServiceAccountToken != nil &&
			v.Projected.Sources[0].ServiceAccountToken.Audience == api.IstioCAAudience {
			tokenVol = v.Name
		}
		if v.ConfigMap != nil && v.ConfigMap.Name == "istio-ca-root-cert" && (v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional) {
			t.Error("the CA root ConfigMap is not optional: the agent (the node's CNI) would not start without Istio")
		}
	}
	if tokenVol == "" {
		t.Fatal("no projected istio-ca token")
	}
	for _, ctr := range spec.Containers {
		mounts := slices.ContainsFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == tokenVol })
		if mounts != (ctr.Name == "sds") {
			t.Errorf("container %s mounts the istio-ca token: %v", ctr.Name, mounts)
		}
		if ctr.Name != "sds" && hostPathOf(agent, sdsDir, ctr) != "" {
			t.Errorf("container %s mounts the SDS socket's directory", ctr.Name)
		}
		for _, m := range ctr.VolumeMounts {
			if ctr.Name != "sds" && slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
				return v.Name == m.Name && v.HostPath != nil && v.HostPath.Path == "/var/run/nodemesh-sds"
			}) {
				t.Errorf("container %s mounts the SDS host directory", ctr.Name)
			}
		}
	}
	agentHost := hostPathOf(agent, sdsDir, *sds)
	espec := envoy.Spec.Template.Spec
	envoyHost := hostPathOf(envoy, sdsDir, espec.Containers[0])
	if agentHost == "" || agentHost != envoyHost {
		t.Errorf("SDS socket directory: the sds container's host path %q, the node Envoy's %q", agentHost, envoyHost)
	}
	if !slices.Contains(espec.InitContainers[0].Args, "--sds-socket="+api.SDSSocket) {
		t.Errorf("bootstrap args %v lack --sds-socket=%s", espec.InitContainers[0].Args, api.SDSSocket)
	}
	for _, m := range espec.Containers[0].VolumeMounts {
		if m.MountPath == sdsDir && !m.ReadOnly {
			t.Error("the node Envoy mounts the SDS directory writable")
		}
	}

	_, envoy = render(map[string]any{"mtls": map[string]any{"enabled": true}, "envoy": map[string]any{"standIn": map[string]any{"enabled": true}}})
	if hostPathOf(envoy, sdsDir, envoy.Spec.Template.Spec.Containers[0]) != "" {
		t.Error("the stand-in proxy (no TLS) mounts the SDS socket")
	}
	if problems := Validate(c, map[string]any{"mtls": map[string]any{"sdsHostPath": "/var/run/nodemesh"}}); problems == nil {
		t.Error("the CNI socket's directory is accepted as the SDS directory")
	}
}

// TestMTLSControllerFlag: one switch, mtls.enabled, turns on both halves —
// the agents' SDS container and the controller's Istio mTLS translation
// (--istio-mtls), whose transport sockets reference the secrets that
// container serves; neither without the other. The agent's --istio-mtls
// (it captures the ports the node Envoy terminates mTLS on, by the
// controller's rule) and its right to read DestinationRules follow the
// same switch: a controller serving mTLS chains the agents never capture
// for would leave sidecar clients' mTLS reaching the pods.
func TestMTLSControllerFlag(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{false, true} {
		out, err := Render(c, RenderOptions{Values: map[string]any{"mtls": map[string]any{"enabled": on}}})
		if err != nil {
			t.Fatal(err)
		}
		found, agentFound, readsDRs := false, false, false
		for _, obj := range decodeAll(t, out) {
			if ds, ok := obj.(*appsv1.DaemonSet); ok && ds.Name == api.AgentName {
				agentFound = true
				args := ds.Spec.Template.Spec.Containers[0].Args
				if got := slices.Contains(args, "--istio-mtls"); got != on {
					t.Errorf("mtls.enabled=%v: the agent's --istio-mtls is %v (args %v)", on, got, args)
				}
			}
			if cr, ok := obj.(*rbacv1.ClusterRole); ok && cr.Name == api.AgentName {
				for _, r := range cr.Rules {
					if slices.Contains(r.APIGroups, "networking.istio.io") && slices.Contains(r.Resources, "destinationrules") {
						readsDRs = true
					}
				}
			}
			d, ok := obj.(*appsv1.Deployment)
			if !ok || d.Name != api.ControllerName {
				continue
			}
			found = true
			args := d.Spec.Template.Spec.Containers[0].Args
			if got := slices.Contains(args, "--istio-mtls"); got != on {
				t.Errorf("mtls.enabled=%v: the controller's --istio-mtls is %v (args %v)", on, got, args)
			}
		}
		if !found || !agentFound {
			t.Fatal("no controller Deployment or agent DaemonSet rendered")
		}
		if readsDRs != on {
			t.Errorf("mtls.enabled=%v: the agent may read DestinationRules: %v", on, readsDRs)
		}
	}
}
