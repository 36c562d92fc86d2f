package installcli

import (
	"encoding/json"
	"fmt"
	"github.com/nodemesh/nodemesh/internal/cli"
	"strings"
	"testing"
	"time"

	"github.com/nodemesh/nodemesh/install"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// The chart's cluster-wide objects and CRDs are this package's alone on an
// API server of its own (other packages install the chart too).
func TestMain(m *testing.M) { kubetest.Main(m) }

// TestInstallCommands runs the commands as a user would against the API
// server: install (preflight lines, then the install), a second install
// (refused: upgrade), status -o json (not healthy: no kubelet runs pods
// here; exit 1), upgrade (lists what changed), uninstall --purge.
func TestInstallCommands(t *testing.T) {
	env := kubetest.Dedicated(t, "chart")
	ns := fmt.Sprintf("nodemesh-cli-%d", time.Now().UnixNano()%1_000_000)
	common := []string{"--kubeconfig", env.Kubeconfig, "-n", ns}
	t.Cleanup(func() { run(t, "", append([]string{"uninstall", "--purge", "--cleanup-timeout", "1s"}, common...)...) })

	code, out, errOut := run(t, "", append([]string{"install"}, common...)...)
	// Preflight fails here: no nodes are registered is only a warning, but
	// the API server has no istiod — also fine — so only a failing check
	// would stop it. Istio's CRDs are installed by kubetest.
	if code != cli.ExitOK {
		t.Fatalf("install: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"Preflight checks\n", "✅ kubernetes-version", "✅ istio ", "⚠️  nodes", "✅ installed: release nodemesh, revision 1, chart nodemesh-0.1.0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("install output lacks %q:\n%s", want, out)
		}
	}

	code, _, errOut = run(t, "", append([]string{"install", "--skip-preflight"}, common...)...)
	if code != cli.ExitFindings || !strings.Contains(errOut, "nodemesh is already installed (release nodemesh in "+ns+", revision 1") || !strings.Contains(errOut, "use 'nodemesh upgrade'") {
		t.Errorf("second install: exit %d: %s", code, errOut)
	}

	code, out, _ = run(t, "", append([]string{"status", "-o", "json"}, common...)...)
	var st install.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	if code != cli.ExitFindings || st.Healthy || st.Release == nil || st.Release.Revision != 1 || len(st.Components) != 3 || len(st.Problems) == 0 {
		t.Errorf("status: exit %d, %+v", code, st)
	}

	code, out, errOut = run(t, "", append([]string{"upgrade", "--set", "agent.logLevel=debug"}, common...)...)
	if code != cli.ExitOK || !strings.Contains(out, "changed:\n  DaemonSet "+ns+"/nodemesh-agent\n✅ upgraded: release nodemesh, revision 2") {
		t.Errorf("upgrade: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = run(t, "", append([]string{"uninstall", "--purge"}, common...)...)
	if code != cli.ExitOK || !strings.Contains(out, "✅ release nodemesh removed from "+ns) || !strings.Contains(out, "✅ CRDs deleted") {
		t.Errorf("uninstall: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = run(t, "", append([]string{"status"}, common...)...)
	if code != cli.ExitFindings {
		t.Errorf("status after uninstall: exit %d %s", code, errOut)
	}
}

// TestPreflightValues: preflight judges the values given to it, as install
// does — chained mode changes what the CNI check says — and refuses values
// the chart would refuse.
func TestPreflightValues(t *testing.T) {
	env := kubetest.Dedicated(t, "chart")
	common := []string{"--kubeconfig", env.Kubeconfig, "-n", "nodemesh-preflight"}
	cniLine := func(out string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, " cni ") {
				return l
			}
		}
		return ""
	}
	_, out, errOut := run(t, "", append([]string{"preflight"}, common...)...)
	if l := cniLine(out); l == "" || strings.Contains(l, "chained") {
		t.Errorf("preflight with the defaults: CNI line %q, want the standalone check\n%s%s", l, out, errOut)
	}
	_, out, errOut = run(t, "", append([]string{"preflight", "--set", "agent.cni.mode=chained"}, common...)...)
	if l := cniLine(out); !strings.Contains(l, "agent.cni.mode=chained") {
		t.Errorf("preflight --set agent.cni.mode=chained: CNI line %q, want the chained check\n%s%s", l, out, errOut)
	}
	code, _, errOut := run(t, "", append([]string{"preflight", "--set", "agent.cni.mode=sideways"}, common...)...)
	if code != cli.ExitUsage || !strings.Contains(errOut, "mode") {
		t.Errorf("preflight with an invalid value: exit %d %s, want %d naming the value", code, errOut, cli.ExitUsage)
	}
}
