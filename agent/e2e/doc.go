// Package e2e holds the agent's end-to-end test on the real kernel: a node
// network namespace, pod namespaces created through the nodemesh-cni binary,
// the nodemesh-agent binary against a real API server, and real TCP/HTTP
// traffic. It needs root; see e2e_test.go. There is no non-test code here.
package e2e
