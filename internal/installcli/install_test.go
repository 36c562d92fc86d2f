package installcli

import (
	"github.com/nodemesh/nodemesh/internal/cli"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/internal/golden"
)

// noCluster makes kubeconfig resolution find nothing.
func noCluster(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
}

// TestInstallDryRun: the manifests render without a cluster and are the
// golden file the install package checks against helm template.
func TestInstallDryRun(t *testing.T) {
	noCluster(t)
	code, out, errOut := run(t, "", "install", "--dry-run", "-o", "yaml")
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want, err := os.ReadFile("../../install/testdata/dry-run.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Errorf("install --dry-run differs from install/testdata/dry-run.yaml:\n%s", golden.Diff(string(want), out))
	}
}

func TestInstallErrors(t *testing.T) {
	tests := map[string]struct {
		args []string
		code int
		want string // the whole of stderr
	}{
		"mistyped value": {
			args: []string{"install", "--dry-run", "--set", "agent.metricPort=15021"},
			code: cli.ExitUsage,
			want: "Error: invalid values (see values.yaml of the chart, or 'nodemesh install --dry-run -o yaml'):\n  agent.metricPort: unknown key (did you mean agent.metricsPort?)\n",
		},
		"wrong type, no cluster needed to say so": {
			args: []string{"install", "--set", "controller.replicas=two"},
			code: cli.ExitUsage,
			want: "Error: invalid values (see values.yaml of the chart, or 'nodemesh install --dry-run -o yaml'):\n  controller.replicas: got string, want integer\n",
		},
		"no cluster": {
			args: []string{"install"},
			code: cli.ExitFindings,
			want: "Error: cannot reach the Kubernetes API server: no kubeconfig (looked at --kubeconfig, $KUBECONFIG and ~/.kube/config) and not running in a cluster\n",
		},
		"status without a cluster": {
			args: []string{"status", "-o", "json"},
			code: cli.ExitFindings,
			want: "Error: cannot reach the Kubernetes API server: no kubeconfig (looked at --kubeconfig, $KUBECONFIG and ~/.kube/config) and not running in a cluster\n",
		},
		"other chart version": {
			args: []string{"install", "--dry-run", "--version", "9.9.9"},
			code: cli.ExitUsage,
			want: "Error: --version 9.9.9: this nodemesh carries chart 0.1.0; use the nodemesh CLI of release 9.9.9, or --chart-dir\n",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			noCluster(t)
			code, _, errOut := run(t, "", tc.args...)
			if code != tc.code || errOut != tc.want {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d, stderr:\n%s", code, errOut, tc.code, tc.want)
			}
		})
	}
}

func TestCheckFlags(t *testing.T) {
	tol, err := parseTolerations([]string{"dedicated=mesh:NoSchedule", "gpu", "Exists"})
	if err != nil || len(tol) != 3 || tol[0].Key != "dedicated" || tol[0].Value != "mesh" || tol[0].Effect != "NoSchedule" || tol[1].Operator != "Exists" || tol[2].Key != "" {
		t.Errorf("tolerations: %+v %v", tol, err)
	}
	for _, bad := range [][]string{
		{"check", "--toleration", "a:Sometimes"},
		{"check", "--node-selector", "pool"},
		{"check", "--test", "no-such-test"},
	} {
		noCluster(t)
		if code, _, errOut := run(t, "", bad...); code != cli.ExitUsage {
			t.Errorf("%v: exit %d %s", bad, code, errOut)
		}
	}
	noCluster(t)
	if code, _, errOut := run(t, "", "check"); code != cli.ExitFindings || !strings.Contains(errOut, "cannot reach the Kubernetes API server") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("check without a cluster: exit %d %q", code, errOut)
	}
}
