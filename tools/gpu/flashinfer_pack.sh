#!/usr/bin/env bash
# On a CPU machine with registry access: build the trimmed FlashInfer package for an offline GPU
# machine (docs/flashinfer.md). Writes into .peer/ (git-ignored):
#   .peer/flashinfer-0.7.2.post1-mamba.tar.xz   flashinfer/ trimmed to the Mamba kernels (~12 MB)
#   .peer/apache_tvm_ffi-*-cp312-*.whl            its runtime (cp312, the GPU machine's Python)
# The trim keeps every .py (the package imports them all), data/include, and of data/csrc only the
# top-level headers, the selective_state_update*/checkpointing_ssu* sources, the Mamba binding and
# cake_selective_state_update/; it drops __pycache__ and every .cu/.cuh outside data/.
set -euo pipefail
VERSION=0.7.2.post1
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-$ROOT/.peer}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
pip download -q --no-deps "flashinfer-python==$VERSION" -d "$WORK"
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 "apache-tvm-ffi>=0.1.11,<0.2" -d "$OUT"
mkdir -p "$WORK/site"
(cd "$WORK/site" && python3 -m zipfile -e "$WORK"/flashinfer_python-*.whl .)
cd "$WORK/site"
find . -name __pycache__ -type d -prune -exec rm -rf {} +
find flashinfer -path flashinfer/data -prune -o \( -name '*.cu' -o -name '*.cuh' \) -type f -print0 | xargs -0 rm -f
csrc=flashinfer/data/csrc
find "$csrc" -mindepth 1 -maxdepth 1 -type d ! -name cake_selective_state_update -exec rm -rf {} +
find "$csrc" -maxdepth 1 -type f ! -name '*.h' ! -name '*.hpp' ! -name '*.cuh' \
  ! -name 'selective_state_update*' ! -name 'checkpointing_ssu*' ! -name 'flashinfer_mamba_binding.cu' -delete
tar -cJf "$OUT/flashinfer-$VERSION-mamba.tar.xz" flashinfer flashinfer_python-*.dist-info
ls -la "$OUT"
