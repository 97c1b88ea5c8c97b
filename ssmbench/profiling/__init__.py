"""Profiler wrappers around one case's chain (`ssmbench profile`) and the byte-model check
(`ssmbench validate-bytes`).

The command re-executes itself under the tool (ncu, nsys, compute-sanitizer) with a hidden
``--inner`` flag; the inner process builds the case exactly as the sweep's worker does
(`target.py`), verifies it, warms it up and runs the chain inside one NVTX start/end range,
which is what the tool's filter selects. The outer process builds the tool's command line
(`ncu.py`, `nsys.py`, `sanitizer.py`) and parses what the tool wrote.
"""
