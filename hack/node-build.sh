#!/usr/bin/env bash
# Builds what a node of the local cluster runs besides the kubelet, from the Go
# module proxy through the wrapper module in hack/node: containerd 2 (the
# kubelet of Kubernetes 1.36 needs containerd ≥ 2.0; Debian bookworm ships
# 1.6), its runc shim and ctr, and the reference CNI plugins (loopback, which
# containerd's CRI sets up in every sandbox; bridge, ptp and host-local for the
# chained CNI mode), and runc at the version containerd's go.mod names (with
# seccomp: cgo and Debian's libseccomp-dev; bookworm's runc 1.1.5 is older
# than containerd 2.4 is tested with). Cached outside the repository:
#
#   $NODEMESH_CACHE/node/containerd-v<version>/{containerd,containerd-shim-runc-v2,ctr,runc}
#   $NODEMESH_CACHE/node/cni-plugins-v<version>/{loopback,bridge,ptp,host-local}
#
#   $NODEMESH_CACHE/node/coredns-v<version>/coredns
#
# FORCE=1 rebuilds. Prints the three directories on its last three lines
# (CoreDNS, containerd, CNI plugins).
set -euo pipefail
cd "$(dirname "$0")/node"

CTRD_VERSION=$(sed -n 's/^\tgithub.com\/containerd\/containerd\/v2 v\(.*\)$/\1/p' go.mod)
CNI_VERSION=$(sed -n 's/^\tgithub.com\/containernetworking\/plugins v\(.*\)$/\1/p' go.mod)
CACHE="${NODEMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodemesh}"
CTRD="$CACHE/node/containerd-v${CTRD_VERSION}"
CNI="$CACHE/node/cni-plugins-v${CNI_VERSION}"
mkdir -p "$CTRD" "$CNI"

build() { # dir name package ldflags
  if [[ -x "$1/$2" && -z "${FORCE:-}" ]]; then
    echo "node-build: $2 cached in $1" >&2
    return
  fi
  echo "node-build: building $2" >&2
  local start=$SECONDS
  CGO_ENABLED=0 go build -trimpath -tags no_btrfs -ldflags="-s -w $4" -o "$1/$2.tmp" "$3"
  mv "$1/$2.tmp" "$1/$2"
  echo "node-build: $2 built in $((SECONDS - start))s" >&2
}

v="-X github.com/containerd/containerd/v2/version.Version=v${CTRD_VERSION}"
build "$CTRD" containerd github.com/containerd/containerd/v2/cmd/containerd "$v"
build "$CTRD" containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 "$v"
build "$CTRD" ctr github.com/containerd/containerd/v2/cmd/ctr "$v"
RUNC_VERSION=$(sed -n 's/^\tgithub.com\/opencontainers\/runc v\(.*\)$/\1/p' go.mod)
if [[ ! -x "$CTRD/runc" || -n "${FORCE:-}" ]]; then
  if [[ ! -f /usr/include/seccomp.h ]]; then
    echo "node-build: runc needs libseccomp-dev (apt-get install -y libseccomp-dev)" >&2
    exit 1
  fi
  echo "node-build: building runc v${RUNC_VERSION}" >&2
  CGO_ENABLED=1 go build -trimpath -tags seccomp -ldflags="-s -w -X main.version=${RUNC_VERSION}" -o "$CTRD/runc.tmp" github.com/opencontainers/runc
  mv "$CTRD/runc.tmp" "$CTRD/runc"
fi
v="-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v${CNI_VERSION}"
for p in main/loopback main/bridge main/ptp ipam/host-local; do
  build "$CNI" "${p#*/}" "github.com/containernetworking/plugins/plugins/$p" "$v"
done
# CoreDNS, the cluster's DNS server, from its own wrapper module (hack/dns).
DNS_VERSION=$(sed -n 's/^\(require \)\{0,1\}[[:space:]]*github.com\/coredns\/coredns v\([^ ]*\)$/\2/p' ../dns/go.mod)
DNS="$CACHE/node/coredns-v${DNS_VERSION}"
mkdir -p "$DNS"
(cd ../dns && build "$DNS" coredns github.com/coredns/coredns "")
"$CTRD/containerd" --version >&2
echo "$DNS"
echo "$CTRD"
echo "$CNI"
