#!/usr/bin/env bash
# Regenerates what controller-gen makes from api/ (the deepcopy functions in
# api/v1alpha1 and the CRDs in install/chart/crds) into a scratch directory and
# fails if it differs from the committed files. Needs only Go: controller-gen
# is pinned in hack/tools/go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."

# The scratch copy lives inside the module (controller-gen loads the packages
# with the module's go.mod); _output is ignored by git and by ./... patterns.
scratch=_output/generate-check
rm -rf "$scratch"
mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT
cp -r api "$scratch/"
rm -f "$scratch"/api/*/zz_generated.*.go
hack/generate.sh "$scratch"

status=0
compare() { # committed-dir fresh-dir glob
  local committed=$1 fresh=$2 glob=$3 f
  for f in "$committed"/$glob; do
    [ -e "$f" ] || continue
    if [ ! -f "$fresh/$(basename "$f")" ]; then
      echo "check-generated: $f is committed but no longer generated" >&2
      status=1
    elif ! cmp -s "$f" "$fresh/$(basename "$f")"; then
      echo "check-generated: $f differs from a fresh generation:" >&2
      diff -u "$f" "$fresh/$(basename "$f")" | head -n 40 >&2 || true
      status=1
    fi
  done
  for f in "$fresh"/$glob; do
    [ -e "$f" ] || continue
    if [ ! -f "$committed/$(basename "$f")" ]; then
      echo "check-generated: $committed/$(basename "$f") is generated but not committed" >&2
      status=1
    fi
  done
}
for dir in api/*/; do
  dir=${dir%/}
  compare "$dir" "$scratch/$dir" 'zz_generated.*.go'
done
compare install/chart/crds "$scratch/install/chart/crds" '*.yaml'
if [ "$status" -ne 0 ]; then
  echo "check-generated: run 'make generate' and commit the result" >&2
  exit 1
fi
echo "check-generated: api/ deepcopy and install/chart/crds match the Go types"
