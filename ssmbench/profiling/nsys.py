"""Nsight Systems: a timeline of just the chain, captured between cudaProfilerStart/Stop.

The inner process calls ``torch.cuda.profiler.start()/stop()`` around the NVTX range, so the
capture range holds the chain launch and nothing of the build or verification.
"""

from __future__ import annotations

import shlex
from pathlib import Path


def nsys_command(inner: list[str], report: Path, nsys: str = "nsys") -> list[str]:
    """Capture only between cudaProfilerStart and cudaProfilerStop (CUDA + NVTX traces)."""
    return [nsys, "profile", "--capture-range=cudaProfilerApi", "--capture-range-end=stop", "--trace=cuda,nvtx",
            "--force-overwrite=true", "-o", str(report), *inner]


def missing_message(cmd: list[str]) -> str:
    """What `ssmbench profile --tool nsys` says (exit 2) where nsys is not installed."""
    return ("nsys (Nsight Systems) is not installed or not on PATH; install it, or use --tool ncu. "
            f"The command would have been:\n  {shlex.join(cmd)}")
