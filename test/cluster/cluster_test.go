//go:build linux

// Package cluster runs nodemesh as a whole on the local two-node cluster
// (make cluster-up: real kubelets, containerd and runc, each node its own
// network, mount and cgroup namespaces): the built images, the real chart
// through 'nodemesh install', every later pod networked by nodemesh-cni
// called by the kubelet, and 'nodemesh check' sending real curl requests
// from real pods. Root only; runs when NODEMESH_CLUSTER is set (make
// test-cluster sets it to required: a missing prerequisite is then a
// failure instead of a skip).
package cluster

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// version tags the images this suite builds and imports.
const version = "e2e"

var root = func() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..")
}()

func required() bool { return os.Getenv("NODEMESH_CLUSTER") == "required" }

func skip(t *testing.T, why string) {
	t.Helper()
	if required() {
		t.Fatal(why)
	}
	t.Skip(why)
}

// run runs a command from the repository root with the cluster's
// kubeconfig and returns its combined output.
func run(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(root, "_output/cluster/kubeconfig"), "VERSION="+version)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func must(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := run(t, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// junit is the part of 'nodemesh check --junit' this suite reads.
type junit struct {
	Suites []struct {
		Cases []struct {
			Name    string    `xml:"name,attr"`
			Failure *struct{} `xml:"failure"`
			Skipped *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// check runs 'nodemesh check' with the given filters and returns each
// test's outcome ("passed", "failed", "skipped"), the output and whether
// the command failed.
func check(t *testing.T, filters ...string) (map[string]string, string, error) {
	t.Helper()
	report := filepath.Join(t.TempDir(), "check.xml")
	args := []string{"check", "--junit", report}
	for _, f := range filters {
		args = append(args, "--test", f)
	}
	out, err := run(t, 10*time.Minute, "bin/nodemesh", args...)
	data, rerr := os.ReadFile(report)
	if rerr != nil {
		t.Fatalf("check wrote no report (%v): %v\n%s", rerr, err, out)
	}
	var j junit
	if err := xml.Unmarshal(data, &j); err != nil {
		t.Fatalf("report: %v", err)
	}
	got := map[string]string{}
	for _, s := range j.Suites {
		for _, c := range s.Cases {
			switch {
			case c.Failure != nil:
				got[c.Name] = "failed"
			case c.Skipped != nil:
				got[c.Name] = "skipped"
			default:
				got[c.Name] = "passed"
			}
		}
	}
	return got, out, err
}

// cut isolates the two nodes' ports on the underlay bridge from each
// other (bridge port isolation): node-to-node traffic — pod traffic between
// the nodes — stops, while each node still reaches the control plane on the
// bridge itself. (This kernel has no tc classifiers to drop by address.)
func cut(t *testing.T, links ...string) {
	t.Helper()
	for _, l := range links {
		must(t, time.Minute, "bridge", "link", "set", "dev", l, "isolated", "on")
	}
}

func restore(t *testing.T, links ...string) {
	t.Helper()
	for _, l := range links {
		must(t, time.Minute, "bridge", "link", "set", "dev", l, "isolated", "off")
	}
}

// deploy applies a manifest of the suite's own (TESTAPP and CURL stand for
// the built test images) and waits until every pod of the namespaces is
// Ready.
func deploy(t *testing.T, manifest string, namespaces ...string) {
	t.Helper()
	kubectl := filepath.Join(kubeBin(t), "kubectl")
	file := filepath.Join(t.TempDir(), "manifest.yaml")
	app := strings.NewReplacer("TESTAPP", "ghcr.io/nodemesh/nodemesh-testapp:"+version, "CURL", "ghcr.io/nodemesh/nodemesh-curl:"+version).Replace(manifest)
	if err := os.WriteFile(file, []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	must(t, time.Minute, kubectl, "apply", "-f", file)
	for _, ns := range namespaces {
		must(t, 2*time.Minute, kubectl, "-n", ns, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=110s")
	}
}

// TestCluster: cluster up, nodemesh installed from the built images, check
// passes across the two nodes; the underlay cut, check fails naming the
// cross-node tests, restored it passes again; uninstall leaves the nodes
// clean.
func TestCluster(t *testing.T) {
	if os.Getenv("NODEMESH_CLUSTER") == "" {
		t.Skip("brings up a whole cluster (minutes): make test-cluster, or NODEMESH_CLUSTER=1")
	}
	if os.Getuid() != 0 {
		skip(t, "the local cluster needs root (network namespaces, mounts, cgroups): sudo make test-cluster")
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified"); err != nil {
		skip(t, "the local cluster is written for a hybrid cgroup layout (/sys/fs/cgroup/unified), as this CI machine has")
	}
	t.Cleanup(func() {
		if out, err := run(t, 3*time.Minute, "hack/cluster/cluster.sh", "down"); err != nil {
			t.Errorf("cluster down: %v\n%s", err, out)
		}
		if _, err := os.Stat("/run/netns/nm-node-a"); err == nil {
			t.Errorf("node namespace nm-node-a left behind")
		}
	})
	run(t, 3*time.Minute, "hack/cluster/cluster.sh", "down") // a cluster left by a crashed run
	must(t, 20*time.Minute, "make", "cluster-up", "VERSION="+version)
	out := must(t, 5*time.Minute, "bin/nodemesh", "install", "-f", "_output/cluster/values.yaml", "--wait", "--timeout", "4m")
	t.Logf("install:\n%s", out)
	if out := must(t, time.Minute, "bin/nodemesh", "status"); !strings.Contains(out, "healthy") {
		t.Fatalf("status not healthy:\n%s", out)
	}

	// The tests this cluster can run (the L7 ones need Envoy; sidecar
	// interop needs istiod) must all pass.
	want := []string{"pod-to-pod", "pod-to-service", "networkpolicy-deny", "trafficpolicy-deny",
		"dns-egress-policy", "pod-to-node", "not-opted-in-untouched-l4"}
	got, out, err := check(t)
	for _, name := range want {
		if got[name] != "passed" {
			t.Errorf("check %s: %s, want passed", name, got[name])
		}
	}
	if err != nil || t.Failed() {
		t.Fatalf("check: %v\n%s", err, out)
	}

	t.Run("underlay cut", func(t *testing.T) {
		// The underlay between the nodes is cut while the control plane's
		// traffic still passes — so check can deploy its workloads and must
		// name the tests that fail.
		cut(t, "nmu-node-a", "nmu-node-b")
		got, out, err := check(t, "^pod-to-pod$", "^pod-to-service$", "^pod-to-node$")
		restore(t, "nmu-node-a", "nmu-node-b")
		if err == nil || got["pod-to-pod"] != "failed" || got["pod-to-service"] != "failed" {
			t.Errorf("with node-b cut off, check: %v, outcomes %v, want pod-to-pod and pod-to-service failed\n%s", err, got, out)
		}
		if !strings.Contains(out, "client → echo-other-node") {
			t.Errorf("the failure does not name the cross-node action:\n%s", out)
		}
		if got["pod-to-node"] != "failed" {
			t.Errorf("pod-to-node %s with node-b cut off, want failed (the other node is unreachable)", got["pod-to-node"])
		}
		// Restored: the node comes back (its lease, its pods) and check
		// passes again.
		deadline := time.Now().Add(3 * time.Minute)
		for {
			got, out, err = check(t, "^pod-to-pod$", "^pod-to-service$")
			if err == nil && got["pod-to-pod"] == "passed" && got["pod-to-service"] == "passed" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after restoring the underlay, check still fails: %v\n%s", err, out)
			}
			time.Sleep(5 * time.Second)
		}
	})

	t.Run("proxyless gRPC follows the VirtualService", testProxylessGRPC)
	startOutside(t)
	t.Run("masquerade", testMasquerade)
	t.Run("authorization policy", testAuthorizationPolicy)
	t.Run("vxlan", func(t *testing.T) {
		// The same cluster moved to the overlay: the agents restart with
		// routingMode vxlan, replace the native routes with the vxlan
		// device's, and pods keep reaching the other node; what follows
		// (agent restart, migration, uninstall) runs on the overlay.
		out := must(t, 5*time.Minute, "bin/nodemesh", "upgrade", "-f", "_output/cluster/values.yaml", "--set", "agent.routingMode=vxlan", "--wait", "--timeout", "4m")
		t.Logf("upgrade:\n%s", out)
		got, out, err := check(t, "^pod-to-pod$", "^pod-to-service$", "^dns-egress-policy$")
		for _, name := range []string{"pod-to-pod", "pod-to-service", "dns-egress-policy"} {
			if got[name] != "passed" {
				t.Errorf("check %s over VXLAN: %s, want passed", name, got[name])
			}
		}
		if err != nil || t.Failed() {
			t.Fatalf("check over VXLAN: %v\n%s", err, out)
		}
		for _, n := range []string{"node-a", "node-b"} {
			if out, err := run(t, time.Minute, "ip", "-n", "nm-"+n, "-d", "link", "show", "nodemesh-vxlan"); err != nil || !strings.Contains(out, "vxlan id") {
				t.Errorf("%s has no vxlan device: %v\n%s", n, err, out)
			}
		}
		checkMasqueraded(t) // the overlay is not the uplink: leaving the cluster is masqueraded as before
	})
	t.Run("agent restart during a stream", testAgentRestart)
	t.Run("migration", testMigration)

	t.Run("uninstall", func(t *testing.T) {
		// Pods that live through the uninstall keep their network (their
		// veths and the routes between the nodes stay while they live),
		// without policy; new pods need another CNI. Services need
		// kube-proxy or another load balancer once nodemesh's is gone.
		kubectl := filepath.Join(kubeBin(t), "kubectl")
		deploy(t, strings.ReplaceAll(streamApp, "stream", "survivors"), "survivors")
		ip := strings.TrimSpace(must(t, time.Minute, kubectl, "-n", "survivors", "get", "pod", "server", "-o", "jsonpath={.status.podIP}"))
		if _, err := run(t, time.Minute, kubectl, "-n", "survivors", "get", "configmap", "nodemesh-ca-root-cert"); err != nil {
			t.Errorf("the controller's CA bundle is not published in namespace survivors: %v", err)
		}
		out := must(t, 5*time.Minute, "bin/nodemesh", "uninstall")
		t.Logf("uninstall:\n%s", out)
		if out, err := run(t, time.Minute, kubectl, "-n", "survivors", "get", "configmap", "nodemesh-ca-root-cert"); err == nil || !strings.Contains(out, "NotFound") {
			t.Errorf("the published CA bundle outlived the uninstall: %v\n%s", err, out)
		}
		for _, n := range []string{"node-a", "node-b"} {
			state := filepath.Join(root, "_output/cluster", n, "root")
			confs, _ := filepath.Glob(filepath.Join(state, "etc/cni/net.d", "*nodemesh*"))
			if len(confs) > 0 {
				t.Errorf("%s: CNI configuration left: %v", n, confs)
			}
			pid, err := os.ReadFile(filepath.Join(root, "_output/cluster", n, "pid"))
			if err != nil {
				t.Fatal(err)
			}
			pins, err := exec.Command("nsenter", "-t", strings.TrimSpace(string(pid)), "-m", "ls", "-A", "/sys/fs/bpf").CombinedOutput()
			if err != nil {
				t.Fatalf("%s: read its bpffs: %v %s", n, err, pins)
			}
			// maps.debug and progs.debug are the kernel's own (bpf_preload
			// populates every bpffs instance with them).
			for _, f := range strings.Fields(string(pins)) {
				if f != "maps.debug" && f != "progs.debug" {
					t.Errorf("%s: %s left in the node's bpffs after uninstall", n, f)
				}
			}
		}
		got, err := run(t, time.Minute, kubectl, "-n", "survivors", "exec", "client", "--", "curl", "-sS", "--max-time", "5", "http://"+ip+":8080/hostname")
		if err != nil || strings.TrimSpace(got) != "server" {
			t.Errorf("a pod that lived through the uninstall → a pod on the other node: %v %q, want the server's name", err, got)
		}
		fmt.Fprintln(os.Stderr) // keep the log readable between subtests
	})
	t.Run("chained after the reference ptp plugin", testChained)
}
