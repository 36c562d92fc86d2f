// Package check is nodemesh's connectivity test ('nodemesh check'): it
// deploys its own workloads — a client and two echo servers (same node,
// other node) in an opted-in namespace, a client and an echo server in a
// namespace that is not opted in, and with Istio a sidecar-injected pair —
// waits until they are ready, runs declarative tests and removes
// everything.
//
// The model is cilium-cli's: a Test declares the Istio and policy
// resources it needs (the framework applies them before its scenarios and
// deletes them after) and holds Scenarios; a Scenario yields Actions; an
// Action runs one command in a pod and judges its output. Commands run
// through the Runner interface: ExecRunner execs in pods through the API
// server (SPDY); tests use a fake.
//
// It imports install (readiness wording) and never cmd.
package check
