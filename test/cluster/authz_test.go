//go:build linux

package cluster

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// authzApp: a server on node-b that an AuthorizationPolicy opens to one
// service account on one port; clients of that and of another service
// account on node-a, and a client in a namespace a DENY names.
const authzApp = `apiVersion: v1
kind: Namespace
metadata: {name: authz, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Namespace
metadata: {name: authz-legacy}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: authz}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: other, namespace: authz}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-from-client, namespace: authz}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/authz/sa/client", "cluster.local/ns/authz-legacy/sa/default"]}}]
    to: [{operation: {ports: ["8080"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-legacy, namespace: authz}
spec:
  action: DENY
  rules:
  - from: [{source: {namespaces: ["authz-legacy"]}}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: authz, labels: {app: server}}
spec:
  nodeName: node-b
  containers: [{name: s, image: TESTAPP, args: [netexec, --http-port=8080], readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}}]
---
apiVersion: v1
kind: Pod
metadata: {name: allowed, namespace: authz}
spec:
  nodeName: node-a
  serviceAccountName: client
  containers: [{name: c, image: CURL, command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: other-sa, namespace: authz}
spec:
  nodeName: node-a
  serviceAccountName: other
  containers: [{name: c, image: CURL, command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: authz-legacy}
spec:
  nodeName: node-a
  containers: [{name: c, image: CURL, command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]}]
`

// testAuthorizationPolicy: Istio AuthorizationPolicies on the running
// cluster, enforced by the agents in eBPF across the two nodes for the
// pods of an opted-in namespace (Istio authorizes only pods it proxies): an ALLOW by
// principal admits the client's service account and nobody else's, a DENY
// by namespace wins over an ALLOW naming that namespace's principal, and
// deleting the ALLOW opens the server to the other service account.
func testAuthorizationPolicy(t *testing.T) {
	kubectl := filepath.Join(kubeBin(t), "kubectl")
	defer run(t, 2*time.Minute, kubectl, "delete", "namespace", "authz", "authz-legacy", "--wait=true", "--timeout=100s")
	deploy(t, authzApp, "authz", "authz-legacy")
	ip := strings.TrimSpace(must(t, time.Minute, kubectl, "-n", "authz", "get", "pod", "server", "-o", "jsonpath={.status.podIP}"))
	get := func(ns, pod string) error {
		out, err := run(t, time.Minute, kubectl, "-n", ns, "exec", pod, "--", "curl", "-sS", "--connect-timeout", "2", "--max-time", "4", "http://"+ip+":8080/hostname")
		if err != nil || strings.TrimSpace(out) != "server" {
			return fmt.Errorf("%v %q", err, strings.TrimSpace(out))
		}
		return nil
	}
	// The agents see the policies and the clients' identities within a
	// sync; the first answers may come before that.
	eventually := func(what string, ok func() error) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := ok()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %v", what, err)
				return
			}
			time.Sleep(time.Second)
		}
	}
	denied := func(ns, pod string) func() error {
		return func() error {
			if err := get(ns, pod); err == nil {
				return fmt.Errorf("%s/%s reached the server", ns, pod)
			}
			return nil
		}
	}
	eventually("the ALLOW's principal (authz/client) → server", func() error { return get("authz", "allowed") })
	eventually("another service account (authz/other) refused", denied("authz", "other-sa"))
	eventually("a principal the ALLOW names but the DENY's namespace refused", denied("authz-legacy", "legacy"))
	if err := get("authz", "allowed"); err != nil {
		t.Errorf("the allowed client after the denials: %v", err)
	}
	// The controller says where the policy runs, on the policy (kubectl
	// describe shows it).
	eventually("the controller's Enforced Event on the policy", func() error {
		out, err := run(t, time.Minute, kubectl, "-n", "authz", "get", "events", "--field-selector", "involvedObject.name=server-from-client,reason=Enforced",
			"-o", "jsonpath={.items[*].message}")
		if err != nil || !strings.Contains(out, "enforced in eBPF for 1 pod on node node-b") {
			return fmt.Errorf("%v %q", err, out)
		}
		return nil
	})
	must(t, time.Minute, kubectl, "-n", "authz", "delete", "authorizationpolicy", "server-from-client")
	eventually("without the ALLOW, another service account → server", func() error { return get("authz", "other-sa") })
	eventually("without the ALLOW, the DENY still refuses authz-legacy", denied("authz-legacy", "legacy"))
}
