#!/usr/bin/env bash
# Sourced by the GPU scripts from the repo root: install the carried wheels (.whl/: nvtx,
# cupti-python, ... built for the GPU machine's Python) into /tmp/site when they are there, and
# export PYTHONPATH (site + repo root + kernels/, the source root of ssmbench_kernels) and
# PYTHONUNBUFFERED.
#   source tools/gpu/wheels.sh
if [ -d .whl ]; then
  pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >/dev/null 2>&1 \
    || echo "wheels.sh: installing .whl/*.whl into /tmp/site failed" >&2
  export PYTHONPATH="/tmp/site:$PWD:$PWD/kernels${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD:$PWD/kernels${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
