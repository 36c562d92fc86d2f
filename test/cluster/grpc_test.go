//go:build linux

package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// grpcApp: two versions of a gRPC service (grpcprobe server), a
// DestinationRule with their subsets and a VirtualService that sends calls
// with x-nodemesh-check: v2 to v2 and the rest to v1; and a proxyless
// client pod with what a proxyless application in the cluster has: its
// projected token for the controller (audience nodemesh-xds) and the
// controller's CA bundle.
const grpcApp = `apiVersion: v1
kind: Namespace
# Pods reach the controller's xDS port only from opted-in namespaces (the
# chart's NetworkPolicy and TrafficPolicy on the controller).
metadata: {name: grpc, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Service
metadata: {name: grpc-echo, namespace: grpc}
spec:
  selector: {app: grpc-echo}
  ports: [{name: grpc, port: 9090}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: grpc-echo-v1, namespace: grpc}
spec:
  selector: {matchLabels: {app: grpc-echo, version: v1}}
  template:
    metadata: {labels: {app: grpc-echo, version: v1}}
    spec:
      containers: [{name: s, image: PROBE, args: [server, --port=9090, --id=v1]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: grpc-echo-v2, namespace: grpc}
spec:
  selector: {matchLabels: {app: grpc-echo, version: v2}}
  template:
    metadata: {labels: {app: grpc-echo, version: v2}}
    spec:
      containers: [{name: s, image: PROBE, args: [server, --port=9090, --id=v2]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: grpc-echo, namespace: grpc}
spec:
  host: grpc-echo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: grpc-echo, namespace: grpc}
spec:
  hosts: [grpc-echo]
  http:
  - match: [{headers: {x-nodemesh-check: {exact: v2}}}]
    route: [{destination: {host: grpc-echo, subset: v2}}]
  - route: [{destination: {host: grpc-echo, subset: v1}}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: grpc}
spec:
  containers:
  - name: c
    image: PROBE
    args: [server, --port=9091, --id=idle]
    env:
    - {name: GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS, value: "true"}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    volumeMounts:
    - {name: xds-token, mountPath: /var/run/secrets/nodemesh/xds, readOnly: true}
    - {name: ca, mountPath: /var/run/secrets/nodemesh/ca, readOnly: true}
  volumes:
  - name: xds-token
    projected: {sources: [{serviceAccountToken: {audience: nodemesh-xds, expirationSeconds: 3600, path: token}}]}
  - name: ca
    configMap: {name: nodemesh-ca-root-cert}
`

// testProxylessGRPC: L7 routing on the running cluster, proven by a real
// xDS consumer: grpc-go's xDS resolver in a pod, authenticated to
// nodemesh-controller, follows the VirtualService's header match and the
// DestinationRule's subsets.
func testProxylessGRPC(t *testing.T) {
	kubectl := filepath.Join(kubeBin(t), "kubectl")
	app := strings.ReplaceAll(grpcApp, "PROBE", "localhost/nodemesh-cluster/grpcprobe:dev")
	manifest := filepath.Join(t.TempDir(), "grpc.yaml")
	if err := os.WriteFile(manifest, []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	must(t, time.Minute, kubectl, "apply", "-f", manifest)
	defer run(t, 2*time.Minute, kubectl, "delete", "namespace", "grpc", "--wait=true", "--timeout=100s")
	// The controller publishes its CA bundle in every namespace (as
	// istiod does istio-ca-root-cert): the client pod mounts it from its
	// own namespace, which nobody copied it into.
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := run(t, time.Minute, kubectl, "-n", "grpc", "get", "configmap", "nodemesh-ca-root-cert", "-o", "jsonpath={.data.root-cert\\.pem}")
		if err == nil && strings.Contains(out, "BEGIN CERTIFICATE") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the controller did not publish its CA bundle in namespace grpc: %v\n%s", err, out)
		}
		time.Sleep(time.Second)
	}
	must(t, 3*time.Minute, kubectl, "-n", "grpc", "wait", "--for=condition=Ready", "pod", "--all", "--timeout=170s")
	call := func(extra ...string) string {
		args := append([]string{"-n", "grpc", "exec", "client", "--", "/grpcprobe", "client", "--target", "grpc-echo.grpc.svc.cluster.local:9090", "--calls", "20"}, extra...)
		out, err := run(t, 2*time.Minute, kubectl, args...)
		if err != nil {
			t.Fatalf("proxyless client: %v\n%s", err, out)
		}
		return strings.TrimSpace(out)
	}
	if got := call(); got != "v1 20" {
		t.Errorf("without the header: %q, want every call answered by v1 (the VirtualService's default route)", got)
	}
	if got := call("--header", "x-nodemesh-check=v2"); got != "v2 20" {
		t.Errorf("with x-nodemesh-check: v2: %q, want every call answered by v2 (the header match)", got)
	}
}
