package install

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/nodemesh/nodemesh/api"
)

// TestMasqueradeValues: masquerading is on by default in standalone mode
// (pods could not be answered from outside the cluster otherwise), off in
// chained mode whatever agent.masquerade.enabled says (the primary CNI
// masquerades; the agent would refuse to start with both), and the
// exclusions and port range reach the agent.
func TestMasqueradeValues(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	args := func(t *testing.T, agent map[string]any) []string {
		t.Helper()
		var vals map[string]any
		if agent != nil {
			vals = map[string]any{"agent": agent}
		}
		out, err := Render(c, RenderOptions{Values: vals})
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range decodeAll(t, out) {
			if ds, ok := obj.(*appsv1.DaemonSet); ok && ds.Name == api.AgentName {
				return ds.Spec.Template.Spec.Containers[0].Args
			}
		}
		t.Fatal("no agent DaemonSet")
		return nil
	}
	for name, tc := range map[string]struct {
		agent     map[string]any
		want, not []string
	}{
		"default: on": {agent: nil, want: []string{"--masquerade"}},
		"chained: off": {agent: map[string]any{"cni": map[string]any{"mode": "chained"}},
			not: []string{"--masquerade"}},
		"disabled": {agent: map[string]any{"masquerade": map[string]any{"enabled": false}}, not: []string{"--masquerade"}},
		"exclusions and ports": {agent: map[string]any{"masquerade": map[string]any{"nonMasqueradeCIDRs": []any{"10.0.0.0/8"}, "portRange": "62000-65000"}},
			want: []string{"--masquerade", "--non-masquerade-cidr=10.0.0.0/8", "--masquerade-port-range=62000-65000"}},
	} {
		t.Run(name, func(t *testing.T) {
			got := args(t, tc.agent)
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("agent args lack %s: %v", w, got)
				}
			}
			for _, n := range tc.not {
				if slices.Contains(got, n) {
					t.Errorf("agent args have %s: %v", n, got)
				}
			}
		})
	}
}
