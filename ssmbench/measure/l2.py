"""L2 conditions before each sample (docs/spec.md §10), applied outside the measured span.

- ``cold``: flush: write a buffer twice the L2 size, so no input of the chain is left in L2;
- ``hot``: nothing (whatever the previous sample left there stays);
- ``realistic`` (default): flush, then re-touch the in_proj output tensors. In a real decode
  step the GEMM before the conv has just written them, so they sit (dirty) in L2 while the state
  pool, history, conv state and weights do not. The re-touch is an in-place ``mul_(1)``: it
  reads and writes every element like the GEMM's store, and leaves each value bit-identical
  (x * 1 == x exactly, signed zeros and NaNs included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

L2_MODES = ("cold", "hot", "realistic")


def in_proj_outputs(workload: Any) -> list[Any]:
    """The tensors the in_proj GEMM writes just before the chain: Mamba-2 xBC, z, dt; GDN qkv, a, b."""
    names = ("xbc", "z", "dt_raw") if hasattr(workload, "xbc") else ("qkv", "a", "b")
    return [t for t in (getattr(workload, n, None) for n in names) if t is not None]


class L2Flusher:
    """Owns the flush buffer (2x L2 bytes, allocated once per worker)."""

    def __init__(self, l2_bytes: int, device: Any) -> None:
        import torch

        self.nbytes = 2 * int(l2_bytes)
        self._buffer = torch.empty(self.nbytes // 4, dtype=torch.int32, device=device)
        self._value = 0

    def flush(self) -> None:
        self._value ^= 1  # a different value each time: every line is really rewritten
        self._buffer.fill_(self._value)


def l2_action(mode: str, flusher: L2Flusher | None, hot: Sequence[Any]) -> Callable[[], None]:
    """What to do before each sample for ``mode``. Without a flusher (CPU test mode) every mode
    is a no-op."""
    if mode not in L2_MODES:
        raise ValueError(f"unknown L2 mode {mode!r}; allowed: {', '.join(L2_MODES)}")
    if mode == "hot" or flusher is None:
        return lambda: None
    if mode == "cold":
        return flusher.flush
    tensors = list(hot)

    def realistic() -> None:
        flusher.flush()
        for t in tensors:
            t.mul_(1)

    return realistic


def compose(*steps: Callable[[], None] | None) -> Callable[[], None]:
    """One callable running the given steps in order (None entries skipped)."""
    todo = [s for s in steps if s is not None]

    def run() -> None:
        for step in todo:
            step()

    return run
