"""Timers: turn "prepare, then run the chain" into per-sample spans (docs/spec.md §10).

- `CuptiTimer` (the real one): CUPTI activity records of kind CONCURRENT_KERNEL. Each sample is
  bracketed by host timestamps taken after a device synchronize (CUPTI stamps kernel records in
  the same time base as ``cupti.get_timestamp()``), so the kernels of the sample are exactly those
  that started inside the bracket: the preparation (state restore, L2 flush) ran before it, and
  nothing else runs on the device. Span = first kernel start to last kernel end (kernels overlap
  under PDL, so per-kernel durations do not add up); per-kernel durations are reported beside it.
- `CudaEventTimer` (fallback, labelled ``cuda-event``): events around the chain, with a short GPU
  sleep enqueued before the start event so host launch latency is hidden behind it. No per-kernel
  durations.
- `WallTimer` (the CPU test mode only): host wall clock around a synchronous run.

A timer's ``measure(run, prepare, n)`` calls ``prepare()`` (outside the span) then ``run()``
``n`` times and returns n `Sample`s.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class TimerError(RuntimeError):
    """The timer could not attribute kernels to samples (e.g. CUPTI delivered no records)."""


@dataclass
class Sample:
    """One timed chain launch: the span and the summed duration of each kernel name in it."""

    span_us: float
    kernels_us: dict[str, float] = field(default_factory=dict)


class Timer(Protocol):
    name: str
    """Recorded with every result: ``cupti``, ``cuda-event`` or ``wall-cpu``."""

    def measure(self, run: Callable[[], None], prepare: Callable[[], None], n: int) -> list[Sample]: ...


KernelRecord = tuple[str, int, int]
"""(kernel name, start ns, end ns) as read from a CUPTI activity record."""


def attribute(records: Sequence[KernelRecord], brackets: Sequence[tuple[int, int]],
              slack_ns: int = 0) -> list[Sample]:
    """Assign kernel records to samples by host brackets [t0, t1] (ns, same time base) and reduce
    each sample to its span and per-name durations. A kernel belongs to the bracket its start
    falls in, widened by ``slack_ns`` each side (against any skew between the GPU and host
    clocks; brackets are separated by a device sync, so slightly widened ones do not overlap).
    Records outside every bracket (warmup, restore, flush, verification) are ignored. Raises
    `TimerError` if a sample has no kernel."""
    starts = [b[0] - slack_ns for b in brackets]
    per_sample: list[list[KernelRecord]] = [[] for _ in brackets]
    for rec in records:
        i = bisect.bisect_right(starts, rec[1]) - 1
        if i >= 0 and rec[1] <= brackets[i][1] + slack_ns:
            per_sample[i].append(rec)
    samples = []
    for i, recs in enumerate(per_sample):
        if not recs:
            raise TimerError(f"CUPTI recorded no kernel for sample {i} of {len(brackets)}")
        first = min(r[1] for r in recs)
        last = max(r[2] for r in recs)
        kernels: dict[str, float] = {}
        for name, start, end in recs:
            kernels[name] = kernels.get(name, 0.0) + (end - start) / 1e3
        samples.append(Sample((last - first) / 1e3, kernels))
    return samples


class CuptiTimer:
    """Kernel spans from CUPTI activity records (cupti-python).

    Kernel activity is enabled once, when the timer is made (before any graph is captured, so
    graph-replayed kernels are traced too) and stays on; each ``measure`` drops what arrived
    before it, and reads its own records with one forced flush at the end of the round.
    """

    name = "cupti"

    SLACK_NS = 0
    """Bracket widening for `attribute`. Zero: CUPTI converts GPU timestamps to its host time base,
    and a chain's first kernel starts a launch latency (microseconds) after ``t0``. Widening would
    risk counting the tail of the preparation into a span (silently wrong); without it, a clock
    skew shows as a `TimerError` and the worker falls back to CUDA events (loudly labelled)."""

    def __init__(self, synchronize: Callable[[], None]) -> None:
        from cupti import cupti  # lazy: GPU machines only

        self._cupti = cupti
        self._sync = synchronize
        self._lock = threading.Lock()
        self._records: list[KernelRecord] = []
        self._kind = int(cupti.ActivityKind.CONCURRENT_KERNEL)
        cupti.activity_register_callbacks(self._buffer_requested, self._buffer_completed)
        cupti.activity_enable(cupti.ActivityKind.CONCURRENT_KERNEL)

    @staticmethod
    def _buffer_requested() -> tuple[int, int]:
        return 8 * 1024 * 1024, 0  # bytes, max records (0 = as many as fit)

    def _buffer_completed(self, activities) -> None:  # called by CUPTI, possibly on its own thread
        kept = [(str(a.name), int(a.start), int(a.end)) for a in activities if int(a.kind) == self._kind]
        with self._lock:
            self._records.extend(kept)

    def _drain(self) -> list[KernelRecord]:
        self._cupti.activity_flush_all(1)  # 1 = CUPTI_ACTIVITY_FLAG_FLUSH_FORCED: incomplete buffers too
        with self._lock:
            records, self._records = self._records, []
        return records

    def measure(self, run: Callable[[], None], prepare: Callable[[], None], n: int) -> list[Sample]:
        self._sync()
        self._drain()  # forget everything before this round
        now = self._cupti.get_timestamp
        brackets = []
        for _ in range(n):
            prepare()
            self._sync()
            t0 = now()
            run()
            self._sync()
            brackets.append((t0, now()))
        return attribute(self._drain(), brackets, self.SLACK_NS)

    def close(self) -> None:
        self._cupti.activity_disable(self._cupti.ActivityKind.CONCURRENT_KERNEL)
        self._drain()


class CudaEventTimer:
    """CUDA events around each launch (fallback; labelled ``cuda-event`` in the results)."""

    name = "cuda-event"

    SLEEP_CYCLES = 50_000
    """~25 us of GPU sleep before the start event: the host enqueues the chain meanwhile, so
    launch latency stays out of the span (the span still includes gaps between kernels)."""

    def __init__(self, device) -> None:
        import torch

        self._torch = torch
        self._device = device

    def measure(self, run: Callable[[], None], prepare: Callable[[], None], n: int) -> list[Sample]:
        torch = self._torch
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                 for _ in range(n)]
        for start, end in pairs:
            prepare()
            torch.cuda._sleep(self.SLEEP_CYCLES)
            start.record()
            run()
            end.record()
        torch.cuda.synchronize(self._device)
        return [Sample(start.elapsed_time(end) * 1e3) for start, end in pairs]


class WallTimer:
    """Host wall clock around a synchronous run: the CPU test mode only (never a GPU number)."""

    name = "wall-cpu"

    def measure(self, run: Callable[[], None], prepare: Callable[[], None], n: int) -> list[Sample]:
        samples = []
        for _ in range(n):
            prepare()
            t0 = time.perf_counter_ns()
            run()
            samples.append(Sample((time.perf_counter_ns() - t0) / 1e3))
        return samples


def kernel_medians(samples: Sequence[Sample], keep: int = 8) -> dict[str, float]:
    """Median per kernel name over the samples (a name missing from a sample counts 0 there).
    Names beyond the ``keep`` slowest are summed into ``(other)``: eager reference chains launch
    dozens of small PyTorch kernels."""
    from ssmbench.output.stats import median

    names: list[str] = []
    for s in samples:
        names += [k for k in s.kernels_us if k not in names]
    medians = {k: median([s.kernels_us.get(k, 0.0) for s in samples]) for k in names}
    if len(medians) <= keep:
        return medians
    ranked = sorted(medians, key=medians.__getitem__, reverse=True)
    kept = {k: medians[k] for k in names if k in ranked[:keep]}
    kept["(other)"] = median([sum(v for k, v in s.kernels_us.items() if k not in kept) for s in samples])
    return kept
