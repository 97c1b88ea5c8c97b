#!/usr/bin/env bash
# On a CPU machine with registry access: pack NVIDIA's CuTe DSL (the `cutlass` Python package that
# FlashInfer's GDN decode kernels are written in, and `cuda.bindings` under it) for the offline H200
# machine, in pieces small enough to carry (the device carries 64 MiB a call, the tree included;
# nvidia-cutlass-dsl-libs-cu13 alone is a 92 MB wheel, 237 MB unpacked). Writes (git-ignored):
#   .cutedsl/a/   the small wheels (cuda-bindings, cuda-pathfinder, nvidia-cutlass-dsl{,-libs-base,-libs-core},
#                 protobuf) and the first part of libs-cu13.tar.xz (the cu13 libs, unpacked and xz -9)
#   .cutedsl/b/   the other part, and parts.sha256 (what tools/gpu/cutedsl_setup.sh checks before unpacking)
# Carry .cutedsl/a and .cutedsl/b in two calls to one warm machine (docs/flashinfer.md, "GDN").
set -euo pipefail
VERSION=4.8.1
BINDINGS=13.5.0
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-$ROOT/.cutedsl}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
rm -rf "$OUT"; mkdir -p "$OUT/a" "$OUT/b"
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
pip download -q --no-deps "${plat[@]}" -d "$OUT/a" "nvidia-cutlass-dsl==$VERSION" \
  "nvidia-cutlass-dsl-libs-base==$VERSION" "nvidia-cutlass-dsl-libs-core==$VERSION" \
  "cuda-bindings==$BINDINGS" cuda-pathfinder "protobuf>=4.21.12"
pip download -q --no-deps "${plat[@]}" -d "$WORK" "nvidia-cutlass-dsl-libs-cu13==$VERSION"
mkdir -p "$WORK/x"
(cd "$WORK/x" && python3 -m zipfile -e "$WORK"/nvidia_cutlass_dsl_libs_cu13-*.whl . \
   && tar -cf - nvidia_cutlass_dsl nvidia_cutlass_dsl_libs_cu13-*.dist-info | xz -9 -T0 > "$WORK/libs-cu13.tar.xz")
half=$(( ($(stat -c %s "$WORK/libs-cu13.tar.xz") + 1) / 2 ))
(cd "$WORK" && split -b "$half" libs-cu13.tar.xz libs-cu13.tar.xz.part && sha256sum libs-cu13.tar.xz.part* > parts.sha256)
mv "$WORK/libs-cu13.tar.xz.partaa" "$OUT/a/"
mv "$WORK/libs-cu13.tar.xz.partab" "$WORK/parts.sha256" "$OUT/b/"
du -sh "$OUT"/*
