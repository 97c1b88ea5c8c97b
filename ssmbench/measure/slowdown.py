"""TEST ONLY: a knob that makes every measured chain slower by a set fraction, so the regression
gate's detection can be shown on a GPU (docs/gate.md, tools/gpu/gate_evidence.sh).

``SSMBENCH_TEST_SLOWDOWN=0.05`` appends one launch of a spin kernel to each chain after it was
verified. The spin kernel busy-waits on the GPU's nanosecond ``%globaltimer`` for a time read
from a one-element device tensor, so the wait is set after capture without capturing again:

1. the spin launch is appended with a zero wait and the chain captured again;
2. the plain and the new graph are timed in three back-to-back pairs of short rounds (the
   session's timer): the median difference is what one more launch costs by itself;
3. the wait is set to ``fraction * span - that cost`` (never negative);
4. closed loop: the plain and the slowed graph are timed again in back-to-back pairs and the
   wait corrected by the shortfall, up to CORRECTION_ROUNDS times, until the chain is within
   10% of ``fraction`` slower. Where one launch alone costs more than the target, the slowdown
   is larger than asked: the record's note says by how much was measured.

Limitation (H200, docs/gate.md): the calibration's short rounds can see another steady state
than the long timed run. For the short ALU-bound fp8-SR chains at batch 8 and 16 the plain
chain spanned 30.5 us in calibration but 33.1 us in the run, where the zero-wait spin then added
only 0.2-0.4 us: the knob slowed them by 0.4-1.1%, not 5%. The gate's detection of a real +5%
is therefore shown on the real samples of a run scaled by exactly 1.05 as well.

The spin kernel's name (``test_slowdown_spin``) shows in ``kernels_us``, each record gets a note,
each device entry and the run's env carry ``test_slowdown``: a slowed run cannot pass for a
normal one, and `ssmbench baseline save` refuses it. Unset, nothing here runs.

On the CPU test mode the spin is a host busy-wait with the same calibration (for CPU tests).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ssmbench.errors import UsageError
from ssmbench.output.stats import median

SLOWDOWN_ENV = "SSMBENCH_TEST_SLOWDOWN"
SPIN_KERNEL = "test_slowdown_spin"
CALIBRATION_SAMPLES = 15
"""Samples per calibration round."""
CALIBRATION_PAIRS = 3
CORRECTION_ROUNDS = 3
"""Closed-loop corrections of the spin's wait after the first estimate."""
TOLERANCE = 0.1
"""Accept the achieved slowdown when within this fraction of the target (0.05 -> 4.5%..5.5%)."""


def slowdown_fraction() -> float | None:
    """The knob's value (0 < x <= 1), or None when it is unset or empty."""
    text = os.environ.get(SLOWDOWN_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{SLOWDOWN_ENV}={text!r}: a fraction, e.g. 0.05 for 5% slower") from None
    if not 0.0 < value <= 1.0:
        raise UsageError(f"{SLOWDOWN_ENV}={text!r}: allowed 0 < fraction <= 1 (0.05 = 5% slower)")
    return value


def spin_wait_ns(fraction: float, base_us: float, launch_cost_us: float) -> int:
    """The spin's wait: the part of ``fraction * base`` that the extra launch does not already add."""
    return max(0, round((fraction * base_us - launch_cost_us) * 1e3))


_spin_kernel = None


def _triton_spin() -> Any:
    global _spin_kernel
    if _spin_kernel is None:
        import triton
        import triton.language as tl

        @triton.jit
        def test_slowdown_spin(wait_ptr):
            wait = tl.load(wait_ptr)
            start = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64,
                                              is_pure=False, pack=1)
            now = start
            while now - start < wait:
                now = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64,
                                                is_pure=False, pack=1)

        _spin_kernel = test_slowdown_spin
    return _spin_kernel


def spin_launch(device: Any) -> tuple[Callable[[], None], Callable[[int], None]]:
    """(a launch that spins for the current wait, a setter of the wait in ns)."""
    import torch

    if device.type == "cuda":
        wait = torch.zeros(1, dtype=torch.int64, device=device)
        kernel = _triton_spin()

        def launch() -> None:
            kernel[(1,)](wait)

        return launch, lambda ns: wait.fill_(int(ns))

    holder = [0]

    def host_spin() -> None:
        end = time.perf_counter_ns() + holder[0]
        while time.perf_counter_ns() < end:
            pass

    def set_wait(ns: int) -> None:
        holder[0] = int(ns)

    return host_spin, set_wait


def slow_down(chain: Any, run: Callable[[], None], capture: Callable[[Any], tuple[Callable[[], None], str, str]],
              span_us: Callable[[Callable[[], None]], float], fraction: float,
              device: Any) -> tuple[Callable[[], None], str, str]:
    """Append the calibrated spin launch to ``chain``; return (the new run, its launch mode, a
    note for the record). ``capture`` is the session's graph capture, ``span_us(run)`` the
    median span of a short timed round."""
    launch, set_wait = spin_launch(device)
    set_wait(0)
    chain.launches.append(launch)
    chain.kernel_names.append(SPIN_KERNEL)
    slowed, mode, _ = capture(chain)

    def measure() -> tuple[float, float]:
        """(plain span, extra span of the slowed graph): medians of back-to-back pairs, so one
        slow round (a first replay, a clock step) cannot fake the difference."""
        pairs = [(span_us(run), span_us(slowed)) for _ in range(CALIBRATION_PAIRS)]
        return median([b for b, _ in pairs]), median([s - b for b, s in pairs])

    base, cost = measure()
    cost = max(0.0, cost)
    wait_ns = spin_wait_ns(fraction, base, cost)
    achieved = cost
    for _ in range(CORRECTION_ROUNDS):
        set_wait(wait_ns)
        base, achieved = measure()
        shortfall_us = fraction * base - achieved
        if abs(shortfall_us) <= TOLERANCE * fraction * base or (wait_ns == 0 and shortfall_us < 0):
            break
        wait_ns = max(0, wait_ns + round(shortfall_us * 1e3))
    set_wait(wait_ns)
    note = (f"TEST SLOWDOWN {SLOWDOWN_ENV}={fraction:g}: chain span {base:.2f} us, the extra launch alone "
            f"+{cost:.2f} us, spin {wait_ns / 1e3:.2f} us (target +{fraction * base:.2f} us, "
            f"last calibration +{achieved:.2f} us)")
    return slowed, mode, note
