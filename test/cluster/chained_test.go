//go:build linux

package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// ptpConflist is the nodes' primary CNI for the chained subtest: the
// reference ptp plugin with host-local IPAM over the upper part of the
// node's pod CIDR (the lower part may still be held by pods nodemesh's own
// IPAM addressed before the uninstall), its state in the node's own
// directory (the nodes share the host's /var/lib/cni).
func ptpConflist(cidr, dataDir string) ([]byte, error) {
	base, ok := strings.CutSuffix(cidr, ".0/24")
	if !ok {
		return nil, fmt.Errorf("pod CIDR %q: the subtest expects a /24", cidr)
	}
	return json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0", "name": "ptp-primary",
		"plugins": []any{map[string]any{
			"type": "ptp", "ipMasq": false, "mtu": 1500,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": cidr, "rangeStart": base + ".128", "rangeEnd": base + ".250", "gateway": base + ".254"}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": dataDir,
			},
		}},
	}, "", "  ")
}

// chainTypes reads the plugin types of a conflist.
func chainTypes(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var types []string
	for _, p := range c.Plugins {
		types = append(types, p.Type)
	}
	return types
}

// testChained: nodemesh in chained mode under the real kubelets. After the
// uninstall the nodes get a primary CNI of their own (the reference ptp
// plugin, as a cluster with another CNI has); 'nodemesh install' with
// agent.cni.mode=chained appends nodemesh-cni to that conflist, every new
// pod is made by ptp (its address from ptp's host-local) and policed by
// nodemesh (check's deny tests), across the two nodes; the uninstall takes
// nodemesh out of the chain and leaves ptp's conflist as it was.
func testChained(t *testing.T) {
	kubectl := filepath.Join(kubeBin(t), "kubectl")
	nodes := []string{"node-a", "node-b"}
	conflists := map[string]string{}
	dataDirs := map[string]string{}
	for _, n := range nodes {
		state := filepath.Join(root, "_output/cluster", n, "root")
		cidr := strings.TrimSpace(must(t, time.Minute, kubectl, "get", "node", n, "-o", "jsonpath={.spec.podCIDR}"))
		dataDirs[n] = filepath.Join(state, "var/lib/cni-ptp")
		conf, err := ptpConflist(cidr, dataDirs[n])
		if err != nil {
			t.Fatal(err)
		}
		conflists[n] = filepath.Join(state, "etc/cni/net.d", "10-ptp.conflist")
		if err := os.WriteFile(conflists[n], conf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			os.Remove(conflists[n])
		}
	})

	out := must(t, 5*time.Minute, "bin/nodemesh", "install", "-f", "_output/cluster/values.yaml", "--set", "agent.cni.mode=chained", "--wait", "--timeout", "4m")
	t.Logf("install (chained):\n%s", out)
	for _, n := range nodes {
		// The agent appends itself once it runs; install --wait returned
		// when the agents were ready, which is after that.
		if got := chainTypes(t, conflists[n]); !slices.Equal(got, []string{"ptp", "nodemesh-cni"}) {
			t.Fatalf("%s: the primary conflist's plugins are %v, want [ptp nodemesh-cni]", n, got)
		}
	}
	if out, err := run(t, time.Minute, "bin/nodemesh", "status"); err != nil || !strings.Contains(out, "healthy") {
		t.Fatalf("status after the chained install: %v\n%s", err, out)
	}
	// CoreDNS was addressed by nodemesh before the uninstall: restarted,
	// its pods are ptp's too, so dns-egress-policy runs against endpoints
	// the chained agent knows.
	must(t, time.Minute, kubectl, "-n", "kube-system", "rollout", "restart", "deployment/coredns")
	must(t, 3*time.Minute, kubectl, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=170s")

	want := []string{"pod-to-pod", "pod-to-service", "networkpolicy-deny", "trafficpolicy-deny", "dns-egress-policy"}
	var filters []string
	for _, w := range want {
		filters = append(filters, "^"+w+"$")
	}
	got, out, err := check(t, filters...)
	for _, name := range want {
		if got[name] != "passed" {
			t.Errorf("check %s in chained mode: %s, want passed", name, got[name])
		}
	}
	if err != nil || t.Failed() {
		t.Fatalf("check in chained mode: %v\n%s", err, out)
	}
	// The pods were ptp's: their addresses are in ptp's host-local state
	// on their node, from the range only ptp hands out.
	ips := strings.Fields(must(t, time.Minute, kubectl, "-n", "kube-system", "get", "pod", "-l", "k8s-app=kube-dns", "-o", "jsonpath={.items[*].status.podIP}"))
	if len(ips) == 0 {
		t.Fatal("no CoreDNS pod address")
	}
	for _, ip := range ips {
		var found bool
		for _, n := range nodes {
			if _, err := os.Stat(filepath.Join(dataDirs[n], "ptp-primary", ip)); err == nil {
				found = true
			}
		}
		if !found {
			t.Errorf("CoreDNS pod %s was not addressed by ptp's host-local (dirs %v)", ip, dataDirs)
		}
	}

	// The control of the masquerade subtest: here nothing masquerades
	// (chained mode leaves it to the primary CNI; this ptp does not), and
	// the outside host cannot answer a pod.
	must(t, time.Minute, kubectl, "-n", "outside", "run", "chained-client", "--image=ghcr.io/nodemesh/nodemesh-curl:"+version,
		"--overrides", `{"spec":{"nodeName":"node-a"}}`, "--command", "--", "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")
	must(t, 2*time.Minute, kubectl, "-n", "outside", "wait", "--for=condition=Ready", "pod/chained-client", "--timeout=110s")
	if got, err := clientIPFromOutside(t, "outside", "chained-client"); err == nil {
		t.Errorf("without masquerading the outside host answered a pod (it saw %s): the masquerade subtest proves nothing", got)
	}

	out = must(t, 5*time.Minute, "bin/nodemesh", "uninstall")
	t.Logf("uninstall (chained):\n%s", out)
	for _, n := range nodes {
		if got := chainTypes(t, conflists[n]); !slices.Equal(got, []string{"ptp"}) {
			t.Errorf("%s: after the uninstall the primary conflist's plugins are %v, want [ptp] (as it was)", n, got)
		}
	}
}
