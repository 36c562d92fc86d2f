// Package kubetest runs a real Kubernetes API — kube-apiserver and etcd, and
// optionally kube-controller-manager — on 127.0.0.1 for tests and local runs.
// The binaries are built from the Go module proxy by hack/kube-build.sh and
// cached outside the repository (see BinDir).
//
// Tests call Get: it reuses an environment named by $NODEMESH_KUBECONFIG or
// left running by `make kube-up` (_output/kube/kubeconfig), or starts a
// private one for the test binary, which Main stops after the tests. When the
// binaries are missing, Get skips the test with the command that builds them —
// unless NODEMESH_KUBE=required, as CI sets, in which case it fails.
//
// Each test gets its own namespaces (Env.Namespace), deleted when it ends.
//
// This package is for tests and tooling; product code must not import it.
package kubetest
