#!/usr/bin/env bash
# Builds istiod (pilot-discovery) from the Go module proxy, for the tests that
# need a real Istio CA (internal/workloadcert). No Docker, no release
# download: 'go install' of the one istio.io/istio version the proxy serves
# here, cached outside the repository like the kube binaries:
#
#   $NODEMESH_CACHE/istio/<version>/pilot-discovery
#
# NODEMESH_CACHE defaults to ~/.cache/nodemesh. Cold: ~4 minutes on 2 cores
# (with the module cache and the Go build cache warm from the kube binaries);
# warm: instant. FORCE=1 rebuilds. Prints the binary's path on its last line.
set -euo pipefail

# internal/kubetest (IstiodBinary) reads this line.
ISTIO_VERSION=v0.0.0-20260827124520-eed52ebb66ad

CACHE="${NODEMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodemesh}"
BIN="$CACHE/istio/${ISTIO_VERSION}"
if [[ -x "$BIN/pilot-discovery" && -z "${FORCE:-}" ]]; then
  echo "istiod-build: pilot-discovery cached in $BIN" >&2
  echo "$BIN/pilot-discovery"
  exit 0
fi
mkdir -p "$BIN"
echo "istiod-build: building pilot-discovery ${ISTIO_VERSION} (first time on this machine: minutes)" >&2
start=$SECONDS
# Outside any module: 'go install pkg@version' resolves istio's own go.mod.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN="$tmp" nice -n 10 go install -trimpath -ldflags='-s -w' \
  "istio.io/istio/pilot/cmd/pilot-discovery@${ISTIO_VERSION}")
mv "$tmp/pilot-discovery" "$BIN/pilot-discovery"
echo "istiod-build: pilot-discovery built in $((SECONDS - start))s" >&2
echo "$BIN/pilot-discovery"
