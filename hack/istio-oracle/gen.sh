#!/usr/bin/env bash
# Regenerates istiod's answers for translate/testdata/istio-oracle/*: builds
# main.go (Istio's FakeDiscoveryServer, the Istio version istiod-build.sh pins)
# in a temporary module with Istio's own go.mod, then runs it on each case's
# input.yaml for the case's client sidecar. Needs the Go module proxy (or a
# warm module cache): the first build takes minutes. Review the diff.
set -euo pipefail
ISTIO_VERSION=$(sed -n 's/^ISTIO_VERSION=//p' "$(dirname "$0")/../istiod-build.sh")
here=$(cd "$(dirname "$0")" && pwd)
cases="$here/../../translate/testdata/istio-oracle"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "istio.io/istio@${ISTIO_VERSION}" >/dev/null)
src=$(go env GOMODCACHE)/istio.io/istio@${ISTIO_VERSION}
sed 's#^module istio.io/istio#module istiooracle#' "$src/go.mod" > "$tmp/go.mod"
cp "$src/go.sum" "$tmp/go.sum"
printf '\nrequire istio.io/istio %s\n' "$ISTIO_VERSION" >> "$tmp/go.mod"
sed '/^\/\/go:build ignore/d' "$here/main.go" > "$tmp/main.go"
(cd "$tmp" && GOFLAGS=-mod=mod CGO_ENABLED=0 nice -n 10 go build -trimpath -o gen .)

# case            proxy pod         labels
while read -r name pod labels; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  "$tmp/gen" -in "$cases/$name/input.yaml" -out "$cases/$name" -pod "$pod" -labels "$labels" -ip 10.244.0.99 >/dev/null 2>"$tmp/$name.log" \
    || { cat "$tmp/$name.log" >&2; exit 1; }
  echo "istio-oracle: $name"
done <<'CASES'
circuit-breaking  fortio-deploy-0  app=fortio
dr-traffic-policy client-0         app=client
retries           client-0         app=client
tcp-shifting      client-0         app=client
CASES
