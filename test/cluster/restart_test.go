//go:build linux

package cluster

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// streamApp: a server on node-b that only the client may reach (a
// NetworkPolicy), the client and a denied pod on node-a.
const streamApp = `apiVersion: v1
kind: Namespace
metadata: {name: stream}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client, namespace: stream}
spec:
  podSelector: {matchLabels: {role: server}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: stream, labels: {role: server}}
spec:
  nodeName: node-b
  containers: [{name: s, image: TESTAPP, args: [netexec, --http-port=8080], readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: stream, labels: {role: client}}
spec:
  nodeName: node-a
  containers: [{name: c, image: CURL, command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: denied, namespace: stream, labels: {role: other}}
spec:
  nodeName: node-a
  containers: [{name: c, image: CURL, command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]}]
`

// testAgentRestart: the agents of both nodes are killed (their pods
// deleted; the DaemonSet makes new ones) while a long TCP stream runs
// between pods on the two nodes. The stream ends complete — no reset, no
// stall — and the policy holds throughout: the denied pod stays denied
// while the agents are gone and after they are back.
func testAgentRestart(t *testing.T) {
	kubectl := filepath.Join(kubeBin(t), "kubectl")
	defer run(t, 2*time.Minute, kubectl, "delete", "namespace", "stream", "--wait=true", "--timeout=100s")
	deploy(t, streamApp, "stream")
	ip := strings.TrimSpace(must(t, time.Minute, kubectl, "-n", "stream", "get", "pod", "server", "-o", "jsonpath={.status.podIP}"))
	url := fmt.Sprintf("http://%s:8080/stream?seconds=20", ip)
	denied := func() error {
		out, err := run(t, time.Minute, kubectl, "-n", "stream", "exec", "denied", "--", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--connect-timeout", "2", "--max-time", "4", url)
		if err == nil {
			return fmt.Errorf("the denied pod got an answer (%s)", strings.TrimSpace(out))
		}
		return nil
	}
	if err := denied(); err != nil {
		t.Fatalf("before the restart: %v", err)
	}

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := run(t, 2*time.Minute, kubectl, "-n", "stream", "exec", "client", "--", "curl", "-sS", "-N", "--max-time", "60", url)
		done <- result{out, err}
	}()
	time.Sleep(3 * time.Second)
	must(t, time.Minute, kubectl, "-n", "nodemesh-system", "delete", "pod", "-l", "app.kubernetes.io/name=nodemesh-agent", "--wait=true", "--timeout=50s")
	// The agents are gone or starting: the programs and maps they left
	// keep enforcing.
	if err := denied(); err != nil {
		t.Errorf("while the agents restart: %v", err)
	}
	must(t, 2*time.Minute, kubectl, "-n", "nodemesh-system", "rollout", "status", "daemonset/nodemesh-agent", "--timeout=110s")
	r := <-done
	lines := strings.Fields(r.out)
	if r.err != nil || len(lines) != 200 || lines[len(lines)-1] != "200" {
		last := ""
		if len(lines) > 0 {
			last = lines[len(lines)-1]
		}
		t.Errorf("the stream across the agent restart: %v, %d lines (last %q), want 200 lines ending in 200", r.err, len(lines), last)
	}
	if err := denied(); err != nil {
		t.Errorf("after the restart: %v", err)
	}
	if out := must(t, time.Minute, kubectl, "-n", "stream", "exec", "client", "--", "curl", "-sS", "--max-time", "5", fmt.Sprintf("http://%s:8080/hostname", ip)); strings.TrimSpace(out) != "server" {
		t.Errorf("the client after the restart: %q, want the server's name", out)
	}
}
