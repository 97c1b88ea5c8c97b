#!/usr/bin/env bash
# On the (offline) GPU machine: gather the CuTe DSL pieces of tools/gpu/cutedsl_pack.sh, carried in two
# calls (.cutedsl/a, then .cutedsl/b), and install them into SITE once both are here. Source it (the
# PYTHONPATH export stays):
#   source tools/gpu/cutedsl_setup.sh [SITE]      (default SITE=/tmp/site)
# Each call copies what it carried into /tmp/cutedsl-parts (a later call's carry replaces .cutedsl);
# the install happens when every part named in parts.sha256 is there and matches. The wheels'
# .pth file (sys.path += nvidia_cutlass_dsl/dsl_packages) is not read from a --target folder, so the
# path goes on PYTHONPATH here.
SITE="${1:-/tmp/site}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STAGE=/tmp/cutedsl-parts
mkdir -p "$STAGE"
for d in "$ROOT"/.cutedsl/a "$ROOT"/.cutedsl/b; do [ -d "$d" ] && cp -n "$d"/* "$STAGE"/ 2>/dev/null; done
if [ ! -f "$SITE/.cutedsl-installed" ] && [ -f "$STAGE/parts.sha256" ] \
   && (cd "$STAGE" && sha256sum --quiet -c parts.sha256 2>/dev/null); then
  mkdir -p "$SITE"
  if pip install -q --no-index --no-deps --target "$SITE" "$STAGE"/*.whl >/dev/null 2>&1 \
     && cat "$STAGE"/libs-cu13.tar.xz.part* | tar -xJf - -C "$SITE"; then
    touch "$SITE/.cutedsl-installed"; echo "cutedsl_setup: CuTe DSL installed into $SITE"
  else
    echo "cutedsl_setup: installing the CuTe DSL pieces failed" >&2
  fi
elif [ ! -f "$SITE/.cutedsl-installed" ] && [ -n "$(ls -A "$STAGE")" ]; then
  echo "cutedsl_setup: CuTe DSL not installed yet (have: $(ls "$STAGE" | tr '\n' ' '))" >&2
fi
export PYTHONPATH="$SITE/nvidia_cutlass_dsl/dsl_packages${PYTHONPATH:+:$PYTHONPATH}"
