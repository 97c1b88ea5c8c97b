#!/usr/bin/env bash
# On the (offline) GPU machine: install the trimmed FlashInfer from .peer/ into a --target site
# folder and restore a JIT cache archive when one is there. Source it, so the exports stay:
#   source tools/gpu/flashinfer_setup.sh [SITE]      (default SITE=/tmp/site)
# Then: python3 -m ssmbench list   ->  flashinfer.ssu ... available
# Sourcing it again on the same machine only re-exports (the install and the cache stay).
SITE="${1:-/tmp/site}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEER="$ROOT/.peer"
if [ ! -f "$SITE/.flashinfer-installed" ]; then
  mkdir -p "$SITE"
  pip install -q --no-index --no-deps --target "$SITE" "$PEER"/apache_tvm_ffi-*.whl >/dev/null 2>&1 \
    || echo "flashinfer_setup: apache-tvm-ffi wheel missing or failed to install ($PEER)" >&2
  tar -xJf "$PEER"/flashinfer-*-mamba.tar.xz -C "$SITE"
  # The JIT builds are ninja builds whose dependencies include these headers (tvm_ffi/include,
  # flashinfer/data/include). pip stamps installed files with the install time, newer than every
  # object in a restored cache, so ninja rebuilt each configuration (~4 min apiece, seen
  # 2026-11-23). Date the package trees back: the wheels pin their content, not their mtimes.
  find "$SITE/tvm_ffi" "$SITE/flashinfer" -exec touch -h -d '2000-01-01 00:00:00' {} + 2>/dev/null
  touch "$SITE/.flashinfer-installed"
fi
export PYTHONPATH="$SITE:$ROOT:$ROOT/kernels${PYTHONPATH:+:$PYTHONPATH}"
export FLASHINFER_CUDA_ARCH_LIST="${FLASHINFER_CUDA_ARCH_LIST:-9.0a}"
# JIT cache: FlashInfer builds each kernel configuration on first use (~35 s per
# selective_state_update config, ~5 min per checkpointing_ssu config) under ~/.cache/flashinfer.
# Restore the archive a previous run brought back (split into <=16 MiB parts) instead of
# rebuilding; never over a cache this machine already has (it may hold newer builds).
if [ ! -d "$HOME/.cache/flashinfer" ] && ls "$PEER"/jit-cache.tar.xz.part* >/dev/null 2>&1; then
  mkdir -p "$HOME/.cache"
  cat "$PEER"/jit-cache.tar.xz.part* | tar -xJf - -C "$HOME/.cache" && echo "flashinfer_setup: JIT cache restored"
  # Ask ninja (dry run) which restored configurations are up to date, so a rebuild shows here
  # and not as minutes of silence inside a sweep.
  if command -v ninja >/dev/null 2>&1; then
    fresh=0; stale=()
    for dir in "$HOME"/.cache/flashinfer/*/*/cached_ops/*/; do
      [ -f "$dir/build.ninja" ] || continue
      if ninja -C "$dir" -n 2>/dev/null | grep -q "no work to do"; then fresh=$((fresh + 1))
      else stale+=("$(basename "$dir")"); stale_dir=${stale_dir:-$dir}; fi
    done
    echo "flashinfer_setup: JIT cache: $fresh configurations up to date, ${#stale[@]} would rebuild ${stale[*]}"
    [ ${#stale[@]} -eq 0 ] || ninja -C "$stale_dir" -n -d explain 2>&1 | head -n 5  # why
  fi
fi
