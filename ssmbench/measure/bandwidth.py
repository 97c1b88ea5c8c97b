"""DRAM speed-of-light (docs/spec.md §10): the copy-bandwidth ceiling, the datasheet figure, and the
arithmetic from bytes and a span to TB/s and SOL %.

The ceiling is measured, not assumed: a device-to-device copy far larger than L2 (>= 4x), bytes
read + written over its median time, once per device per run. The datasheet figure is recorded
beside it (an H100 SXM copies at ~3.0 TB/s against a 3.35 TB/s datasheet).
"""

from __future__ import annotations

from typing import Any

DATASHEET_TBPS: tuple[tuple[str, float], ...] = (
    # Order matters: the first pattern found in the device name wins (GH200 before H200, ...).
    ("GH200", 4.0),
    ("H200", 4.8),
    ("H100 NVL", 3.9),
    ("H100 PCIe", 2.0),
    ("H100", 3.35),  # SXM5 80GB HBM3
    ("H800", 3.35),
    ("B300", 8.0),
    ("B200", 8.0),
    ("A100-SXM4-80GB", 2.039),
    ("A100 80GB PCIe", 1.935),
    ("A100", 1.555),
    ("L40S", 0.864),
)
"""Peak DRAM bandwidth (TB/s) from vendor datasheets, by a substring of the CUDA device name."""

MIN_COPY_BYTES = 1 << 30


def datasheet_tbps(device_name: str) -> float | None:
    lowered = device_name.lower()
    for pattern, tbps in DATASHEET_TBPS:
        if pattern.lower() in lowered:
            return tbps
    return None


def tbps(nbytes: float | None, span_us: float | None) -> float | None:
    """Achieved bandwidth in TB/s (1e12 B/s); None when either is unknown or the span is not positive."""
    if nbytes is None or span_us is None or not span_us > 0:
        return None
    return nbytes / (span_us * 1e-6) / 1e12


def sol_pct(nbytes: float | None, span_us: float | None, peak_tbps: float | None) -> float | None:
    """bytes / span / peak, in percent."""
    achieved = tbps(nbytes, span_us)
    if achieved is None or not peak_tbps:
        return None
    return 100.0 * achieved / peak_tbps


def copy_bytes_for(l2_bytes: int) -> int:
    """Bytes of one copy: at least 4x L2 and 1 GiB, rounded to 1 MiB."""
    size = max(4 * int(l2_bytes), MIN_COPY_BYTES)
    return (size + (1 << 20) - 1) >> 20 << 20


def calibrate_copy(device: Any, l2_bytes: int, reps: int = 20) -> dict[str, float | int]:
    """Measure device-to-device copy bandwidth (bytes read + written per second), CUDA events,
    median of ``reps`` copies after two warm-ups. Random bytes, never zeros."""
    import torch

    from ssmbench.output.stats import median

    nbytes = copy_bytes_for(l2_bytes)
    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    times_ms = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times_ms.append(start.elapsed_time(end))
    del src, dst
    torch.cuda.empty_cache()
    t = median(times_ms)
    return {"measured_tbps": 2 * nbytes / (t * 1e-3) / 1e12, "copy_bytes": nbytes, "copy_ms": t}
