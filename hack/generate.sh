#!/usr/bin/env bash
# Generates what the Go types in api/ define: their deepcopy functions
# (api/*/zz_generated.deepcopy.go) and the CustomResourceDefinitions
# (install/chart/crds/*.yaml, the chart's crds/ and the only copy), with
# controller-gen pinned in hack/tools/go.mod. With a directory argument it
# generates into that copy of the tree instead (check-generated does).
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$(pwd)/hack/tools/go.mod"
root=${1:-.}

mkdir -p "$root/install/chart/crds"
(cd "$root" && go tool -modfile="$tools" controller-gen \
  object paths=./api/... \
  crd paths=./api/... output:crd:dir=install/chart/crds)

# controller-gen starts every file with a document separator. Helm writes its
# own before each crds/ file ('helm template --include-crds', nodemesh install
# --dry-run), so the file's would leave an empty document behind it.
for f in "$root"/install/chart/crds/*.yaml; do
  sed -i '1{/^---$/d}' "$f"
done
