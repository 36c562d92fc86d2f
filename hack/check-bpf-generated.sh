#!/usr/bin/env bash
# Regenerates the bpf2go output (bpf/*_bpfel.go, bpf/*_bpfel.o) from bpf/c into
# a scratch package and fails if it differs from the committed files.
# Needs clang, llvm (llvm-strip) and libbpf-dev:
#   apt-get install -y clang llvm libbpf-dev
# The committed objects were built with Debian bookworm's clang 14.0.6; another
# clang version may produce different (equally valid) objects.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in clang llvm-strip; do
  if ! command -v "$tool" >/dev/null; then
    echo "check-bpf-generated: $tool not found (apt-get install -y clang llvm libbpf-dev)" >&2
    exit 2
  fi
done
if [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
  echo "check-bpf-generated: libbpf headers not found (apt-get install -y libbpf-dev)" >&2
  exit 2
fi
echo "check-bpf-generated: $(clang --version | head -n 1)"

# The scratch package lives inside the module (go tool bpf2go needs go.mod);
# _output is ignored by git and by ./... patterns.
scratch=_output/bpf-generate-check
rm -rf "$scratch"
mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT
cp -r bpf/c bpf/gen.go "$scratch"/
(cd "$scratch" && go generate ./)

status=0
for f in bpf/*_bpfel.go bpf/*_bpfel.o; do
  fresh="$scratch/$(basename "$f")"
  if [ ! -f "$fresh" ]; then
    echo "check-bpf-generated: $f is committed but no longer generated" >&2
    status=1
  elif ! cmp -s "$f" "$fresh"; then
    echo "check-bpf-generated: $f differs from a fresh generation" >&2
    status=1
  fi
done
for fresh in "$scratch"/*_bpfel.go "$scratch"/*_bpfel.o; do
  if [ ! -f "bpf/$(basename "$fresh")" ]; then
    echo "check-bpf-generated: bpf/$(basename "$fresh") is generated but not committed" >&2
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  echo "check-bpf-generated: run 'make bpf-generate' and commit the result" >&2
  exit 1
fi
echo "check-bpf-generated: committed bpf2go output matches bpf/c"
