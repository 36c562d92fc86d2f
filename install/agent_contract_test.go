//go:build linux

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

// agentDaemonSet renders the chart with its defaults and returns the agent
// DaemonSet and the agent's Roles and ClusterRoles.
func renderedAgent(t *testing.T) (*appsv1.DaemonSet, []rbacv1.PolicyRule) {
	t.Helper()
	out := renderDefault(t)
	var ds *appsv1.DaemonSet
	var rules []rbacv1.PolicyRule
	for _, obj := range decodeAll(t, out) {
		switch o := obj.(type) {
		case *appsv1.DaemonSet:
			if o.Name == api.AgentName {
				ds = o
			}
		case *rbacv1.Role:
			if o.Name == api.AgentName {
				rules = append(rules, o.Rules...)
			}
		case *rbacv1.ClusterRole:
			if o.Name == api.AgentName {
				rules = append(rules, o.Rules...)
			}
		}
	}
	if ds == nil {
		t.Fatal("no agent DaemonSet in the chart")
	}
	return ds, rules
}

// TestAgentCapabilities pins what the agent may do to its node: not
// privileged, no privilege escalation, exactly the capabilities it needs
// (api.AgentCapabilities, with which the end-to-end tests run the agent) and
// the runtime's default seccomp profile; and the host paths it mounts,
// none with Bidirectional propagation (which needs a privileged container).
func TestAgentCapabilities(t *testing.T) {
	ds, _ := renderedAgent(t)
	spec := ds.Spec.Template.Spec
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("want one container, got %d (+%d init)", len(spec.Containers), len(spec.InitContainers))
	}
	ctr := spec.Containers[0]
	sc := ctr.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("the agent container has no security context")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("the agent container is privileged")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the agent container may escalate privileges (allowPrivilegeEscalation not false)")
	}
	var added []string
	for _, c := range sc.Capabilities.Add {
		added = append(added, string(c))
	}
	if !slices.Equal(added, api.AgentCapabilities) {
		t.Errorf("capabilities added: %v, want api.AgentCapabilities %v", added, api.AgentCapabilities)
	}
	if got := sc.Capabilities.Drop; len(got) != 1 || got[0] != "ALL" {
		t.Errorf("capabilities dropped: %v, want [ALL]", got)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccomp profile %+v, want RuntimeDefault", sc.SeccompProfile)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the agent's root filesystem is writable")
	}
	if psc := spec.SecurityContext; psc != nil && (psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeUnconfined) {
		t.Error("the pod's seccomp profile is Unconfined")
	}
	if spec.HostPID || spec.HostIPC {
		t.Errorf("hostPID %v, hostIPC %v", spec.HostPID, spec.HostIPC)
	}

	// Host paths: each mounted where it is used, read-only unless the agent
	// writes there.
	type mount struct {
		hostPath, mountPath string
		readOnly            bool
		propagation         corev1.MountPropagationMode
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath == nil {
			t.Errorf("volume %s is not a hostPath", v.Name)
			continue
		}
		hostPaths[v.Name] = v.HostPath.Path
	}
	var got []mount
	for _, m := range ctr.VolumeMounts {
		p := corev1.MountPropagationNone
		if m.MountPropagation != nil {
			p = *m.MountPropagation
		}
		got = append(got, mount{hostPaths[m.Name], m.MountPath, m.ReadOnly, p})
	}
	want := []mount{
		{"/sys/fs/bpf", "/host/sys/fs/bpf", false, corev1.MountPropagationHostToContainer},
		{"/sys/fs/cgroup", "/host/sys/fs/cgroup", true, corev1.MountPropagationNone},
		{"/opt/cni/bin", "/opt/cni/bin", false, corev1.MountPropagationNone},
		{"/etc/cni/net.d", "/etc/cni/net.d", false, corev1.MountPropagationNone},
		{"/var/lib/nodemesh", "/var/lib/nodemesh", false, corev1.MountPropagationNone},
		{"/var/run/nodemesh", "/var/run/nodemesh", false, corev1.MountPropagationNone},
		{"/var/run/netns", "/var/run/netns", true, corev1.MountPropagationHostToContainer},
		{"/proc/sys/net", "/host/proc/sys/net", false, corev1.MountPropagationNone},
	}
	if !slices.Equal(got, want) {
		t.Errorf("mounts:\n got %+v\nwant %+v", got, want)
	}
	if len(spec.Volumes) != len(want) {
		t.Errorf("%d volumes, %d mounted", len(spec.Volumes), len(want))
	}
	// The agent is told where they are.
	args := strings.Join(ctr.Args, " ")
	for _, a := range []string{"--bpffs=/host/sys/fs/bpf", "--cgroup-root=/host/sys/fs/cgroup", "--proc-sys-net=/host/proc/sys/net"} {
		if !strings.Contains(args, a) {
			t.Errorf("args %q lack %s", args, a)
		}
	}
}

// TestAgentUninstallRBAC: the agent reads its own DaemonSet (by name: its
// deletion is the uninstall) and nothing it could take for an uninstall
// request from anyone else; it can change no workload.
func TestAgentUninstallRBAC(t *testing.T) {
	ds, rules := renderedAgent(t)
	var env []string
	for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env = append(env, e.Name+"="+e.ValueFrom.FieldRef.FieldPath)
		}
	}
	if !slices.Contains(env, "POD_NAME=metadata.name") || !slices.Contains(env, "POD_NAMESPACE=metadata.namespace") {
		t.Errorf("the agent is not told its pod (downward API): %v", env)
	}
	readsOwnDS := false
	for _, r := range rules {
		for _, res := range r.Resources {
			switch res {
			case "daemonsets":
				if !slices.Equal(r.ResourceNames, []string{api.AgentName}) || !slices.Equal(r.Verbs, []string{"get", "list", "watch"}) {
					t.Errorf("daemonsets rule %+v: want get/list/watch of %s only", r, api.AgentName)
				}
				readsOwnDS = true
			case "configmaps", "deployments", "replicasets", "statefulsets":
				t.Errorf("the agent may access %s: %+v", res, r)
			}
		}
	}
	if !readsOwnDS {
		t.Error("the agent cannot watch its DaemonSet")
	}
}
