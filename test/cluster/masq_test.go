//go:build linux

package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The host outside the cluster: a network namespace on the underlay
// bridge with an address of the node subnet that no Node has, and no
// route to any pod CIDR — like a server on the Internet, it can answer a
// pod only if the pod's traffic arrives with its node's address.
const (
	outsideNetns = "nm-outside"
	outsideLink  = "nmu-outside"
	outsideAddr  = "172.30.0.200"
)

// outsidePods are the clients that reach the outside host: one on each
// node, in a namespace that is not opted in.
const outsidePods = `apiVersion: v1
kind: Namespace
metadata: {name: outside}
---
apiVersion: v1
kind: Pod
metadata: {name: on-node-a, namespace: outside}
spec:
  nodeName: node-a
  containers: [{name: c, image: CURL, command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: on-node-b, namespace: outside}
spec:
  nodeName: node-b
  containers: [{name: c, image: CURL, command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]}]
`

// startOutside makes the outside host and runs the test app's netexec
// there (/clientip answers with the address the connection came from);
// everything is removed when the test ends.
func startOutside(t *testing.T) {
	t.Helper()
	run(t, time.Minute, "ip", "netns", "del", outsideNetns) // left by a crashed run
	for _, args := range [][]string{
		{"netns", "add", outsideNetns},
		{"link", "add", outsideLink, "type", "veth", "peer", "name", "eth0", "netns", outsideNetns},
		{"link", "set", outsideLink, "master", "nm-underlay", "up"},
		{"-n", outsideNetns, "addr", "add", outsideAddr + "/24", "dev", "eth0"},
		{"-n", outsideNetns, "link", "set", "eth0", "up"},
		{"-n", outsideNetns, "link", "set", "lo", "up"},
	} {
		must(t, time.Minute, "ip", args...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", outsideNetns, filepath.Join(root, "bin/nodemesh-testapp"), "netexec", "--http-port=8080")
	srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
	if err := srv.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		srv.Wait()
		run(t, time.Minute, "ip", "netns", "del", outsideNetns) // the veth goes with it
	})
}

// clientIPFromOutside is what the outside host saw as the address of a
// request from pod ns/name.
func clientIPFromOutside(t *testing.T, ns, name string) (netip.AddrPort, error) {
	t.Helper()
	kubectl := filepath.Join(kubeBin(t), "kubectl")
	out, err := run(t, time.Minute, kubectl, "-n", ns, "exec", name, "--", "curl", "-sS", "--connect-timeout", "3", "--max-time", "5",
		"http://"+outsideAddr+":8080/clientip")
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
	}
	return netip.ParseAddrPort(strings.TrimSpace(out))
}

// testMasquerade: pods on both nodes reach a host outside the cluster,
// which sees their node's address and a port of the NAT range (above the
// nodes' ephemeral ports) — eBPF masquerading on the uplinks, on by
// default in standalone mode. Without it (the chained subtest's control)
// the same request gets no answer.
func testMasquerade(t *testing.T) {
	deploy(t, outsidePods, "outside")
	checkMasqueraded(t)
}

// checkMasqueraded: each outside pod's request arrives from its node's
// InternalIP and a NAT port.
func checkMasqueraded(t *testing.T) {
	t.Helper()
	kubectl := filepath.Join(kubeBin(t), "kubectl")
	for _, n := range []string{"node-a", "node-b"} {
		nodeIP := strings.TrimSpace(must(t, time.Minute, kubectl, "get", "node", n, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`))
		got, err := clientIPFromOutside(t, "outside", "on-"+n)
		if err != nil {
			t.Errorf("pod on %s → %s outside the cluster: %v", n, outsideAddr, err)
			continue
		}
		if got.Addr().String() != nodeIP {
			t.Errorf("pod on %s reached the outside host from %s, want its node's address %s", n, got, nodeIP)
		}
		// The default NAT range: the ports above the nodes' ephemeral
		// range (61000-65535 with Linux's default).
		if got.Port() < 61000 {
			t.Errorf("pod on %s: source port %d, want one of the NAT range (≥ 61000)", n, got.Port())
		}
	}
}
