#!/usr/bin/env bash
# On the (offline) GPU machine: install the trimmed FlashInfer from .peer/ into a --target site
# folder and restore a JIT cache archive when one is there. Source it, so the exports stay:
#   source tests/gpu/flashinfer_setup.sh [SITE]      (default SITE=/tmp/site)
# Then: python3 -m ssmbench list   ->  flashinfer.ssu ... available
SITE="${1:-/tmp/site}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEER="$ROOT/.peer"
mkdir -p "$SITE"
pip install -q --no-index --no-deps --target "$SITE" "$PEER"/apache_tvm_ffi-*.whl >/dev/null 2>&1 \
  || echo "flashinfer_setup: apache-tvm-ffi wheel missing or failed to install ($PEER)" >&2
tar -xJf "$PEER"/flashinfer-*-mamba.tar.xz -C "$SITE"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export FLASHINFER_CUDA_ARCH_LIST="${FLASHINFER_CUDA_ARCH_LIST:-9.0a}"
# JIT cache: FlashInfer builds each kernel configuration on first use (~35 s per
# selective_state_update config, ~5 min per checkpointing_ssu config) under ~/.cache/flashinfer.
# Restore the archive a previous run brought back (split into <=16 MiB parts) instead of rebuilding.
if ls "$PEER"/jit-cache.tar.xz.part* >/dev/null 2>&1; then
  mkdir -p "$HOME/.cache"
  cat "$PEER"/jit-cache.tar.xz.part* | tar -xJf - -C "$HOME/.cache" && echo "flashinfer_setup: JIT cache restored"
fi
