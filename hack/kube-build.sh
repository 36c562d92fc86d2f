#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries the tests run against, from the
# Go module proxy, through the wrapper module in hack/kube (no Docker, no
# release downloads). The binaries are cached outside the repository, so the
# second build is a cache hit:
#
#   $NODEMESH_CACHE/kube/v<version>/{kube-apiserver,etcd,kube-controller-manager,kube-scheduler,kubelet,kubectl}
#
# NODEMESH_CACHE defaults to ~/.cache/nodemesh. Cold: ~6 minutes on 2 cores;
# warm: seconds. FORCE=1 rebuilds.
# Prints the binary directory on its last line.
set -euo pipefail
cd "$(dirname "$0")/kube"

K8S_VERSION=$(sed -n 's/^\tk8s.io\/kubernetes v\(.*\)$/\1/p' go.mod)
ETCD_VERSION=$(sed -n 's/^\tgo.etcd.io\/etcd\/server\/v3 v\(.*\)$/\1/p' go.mod)
CACHE="${NODEMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodemesh}"
BIN="$CACHE/kube/v${K8S_VERSION}"
mkdir -p "$BIN"

minor=${K8S_VERSION#1.}; minor=${minor%%.*}
# Without version stamping /version reports v0.0.0-master and Helm's
# kubeVersion constraints fail.
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=v${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor}"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

build() { # name package
  if [[ -x "$BIN/$1" && -z "${FORCE:-}" ]]; then
    echo "kube-build: $1 cached in $BIN" >&2
    return
  fi
  echo "kube-build: building $1 (first time on this machine: minutes)" >&2
  local start=$SECONDS
  CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$BIN/$1.tmp" "$2"
  mv "$BIN/$1.tmp" "$BIN/$1"
  echo "kube-build: $1 built in $((SECONDS - start))s" >&2
}

# Every binary a suite needs: the migration and check suites run
# kube-controller-manager (Deployments, ReplicaSets, namespace deletion).
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build etcd go.etcd.io/etcd/server/v3
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
# The local cluster (make cluster-up) schedules pods onto real kubelets.
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kubelet k8s.io/kubernetes/cmd/kubelet
build kubectl k8s.io/kubernetes/cmd/kubectl
"$BIN/kube-apiserver" --version >&2
echo "etcd v${ETCD_VERSION}" >&2
echo "$BIN"
