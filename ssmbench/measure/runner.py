"""One worker's measuring session: (case, impls) tasks in, one `CaseRecord` per impl out.

Per case the workload is built once on the device; per impl (the build, verify and L2
preparation steps are `ssmbench.measure.target`'s, shared with `check` and the profilers):

1. **build** the chain (Triton compiles on first use; the worker process lives across cases, so a
   kernel compiled for one case is reused by the next);
2. **verify** (the correctness gate, before any timing): run the chain once and compare with the
   fp64 reference (`ssmbench.measure.verify`); a failing impl is recorded ``fail`` and not timed;
3. **capture** the chain in a CUDA graph (a chain that cannot be captured, e.g. a reference
   with host syncs, is timed eagerly and labelled ``launch: eager``); with a ``restore``, the
   first graph replay is verified too;
4. **time**: per sample, outside the measured span, restore the mutated state and apply the L2
   mode, then replay; samples come in rounds until the stopping rule ends it; the SM clock is
   read after each round.

Errors never escape: a Python exception becomes an ``error`` record and the session goes on; a
CUDA fault (the context is unusable afterwards) is recorded and the worker exits so its parent
starts a fresh one. The parent enforces deadlines from the ``phase`` messages emitted here.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ssmbench.measure.bandwidth import calibrate_copy, datasheet_tbps, sol_pct, tbps
from ssmbench.measure.clocks import ClockMonitor, driver_version, open_clock_monitor, summarize_clocks
from ssmbench.measure.compiles import CompileLog, describe_compiles, install_compile_log
from ssmbench.measure.l2 import L2Flusher
from ssmbench.measure.slowdown import slow_down, slowdown_fraction
from ssmbench.measure.stopping import Stopper, StopRule, run_until_stopped
from ssmbench.measure.target import Target, describe_exception
from ssmbench.measure.timer import (
    CudaEventTimer,
    CuptiTimer,
    Sample,
    Timer,
    TimerError,
    WallTimer,
    kernel_medians,
)
from ssmbench.output.results import CaseRecord, case_params
from ssmbench.output.stats import median_ci_halfwidth, summarize
from ssmbench.spec.case import Case

Emit = Callable[[tuple], None]

TIMER_ENV = "SSMBENCH_TIMER"
UNKNOWN_L2_FLUSH_BYTES = 512 << 20
"""Flush size for a device that reports no L2 size: several times any L2 shipped so far."""
"""Force a timer: ``cupti`` or ``cuda-event`` (default: CUPTI when it works, else events)."""

LEFTOVER_FRACTION = 0.25
"""`Session.free_memory` after a pair: the share of device memory still allocated above which it
collects garbage before the next pair."""

FATAL_MARKERS = (
    "illegal memory access", "unspecified launch failure", "device-side assert", "misaligned address",
    "illegal instruction", "uncorrectable ecc", "launch timed out", "cuda error",
)
"""Messages of CUDA faults after which the context is unusable: the worker exits after recording."""


@dataclass
class WorkerConfig:
    """What a worker needs from its parent (picklable)."""

    device: str = "cuda"  # "cuda" or "cpu" (the CPU test mode)
    gpu_index: int | None = 0
    """The device as the user named it (``--gpus``), for the results."""
    visible_devices: str | None = None
    """CUDA_VISIBLE_DEVICES for the worker (set before CUDA initializes): it sees one GPU."""
    setup_timeout_s: float = 300.0
    """Deadline for workload, build (compile), verify and capture of one impl."""
    grace_s: float = 60.0
    """Added to the spec's ``timeout_s`` for the timing phase's deadline."""
    known_devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Device info (calibrated bandwidth included) from earlier workers of this run, by UUID."""
    plugins: list[str] = field(default_factory=list)
    """Modules to import first (they register extra impls)."""


@dataclass
class Task:
    """One case and the impls to run on it, in order."""

    task_id: int
    sweep: str
    case: Case
    impls: list[str]
    measure: dict[str, Any]


def classify_error(exc: BaseException) -> str:
    """``oom`` (recoverable: free and go on), ``fatal`` (CUDA fault: the worker must exit) or ``error``."""
    text = str(exc).lower()
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return "oom"
        accel = getattr(torch, "AcceleratorError", None)
        if accel is not None and isinstance(exc, accel):
            return "fatal"
    except ImportError:  # pragma: no cover
        pass
    if "out of memory" in text:
        return "oom"
    if any(marker in text for marker in FATAL_MARKERS):
        return "fatal"
    return "error"


def verify_summary(comparisons: list) -> dict[str, Any]:
    ratios = [c.error / c.tolerance if c.tolerance else (0.0 if c.error == 0 else float("inf"))
              for c in comparisons]
    return {
        "max_error": max((c.error for c in comparisons), default=None),
        "worst_ratio": max(ratios, default=None),
        "comparisons": [{"name": c.name, "error": c.error, "tolerance": c.tolerance, "ok": c.ok}
                        for c in comparisons],
    }


def normalize_uuid(raw: Any) -> str:
    text = str(raw)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


class Session:
    """The worker's device, timer, L2 flusher and clock monitor, set up once per worker."""

    def __init__(self, config: WorkerConfig) -> None:
        self._open(config)
        if self.device.type == "cuda":
            # Everything alive now (torch, Triton, the impls, CUPTI: ~200 k objects) lives as long
            # as the worker: kept out of every later collection, so `free_memory`'s full collection
            # scans only what cases made since (~0.07 s -> ms each; issue 18). Not in the CPU test
            # mode, which runs inside other processes (pytest's).
            gc.collect()
            gc.freeze()

    def _open(self, config: WorkerConfig) -> None:
        """The device, timer, L2 flusher, clock monitor and the worker's `info`."""
        import torch

        self.config = config
        self.torch = torch
        self.clocks: ClockMonitor | None = None
        self.flusher: L2Flusher | None = None
        self.compiles: CompileLog | None = None
        """Kernels this process compiles itself (the pre-pass should leave none; `run` notes them)."""
        if config.device == "cpu":
            self.device = torch.device("cpu")
            self.timer: Timer = WallTimer()
            self.info: dict[str, Any] = {
                "index": None, "name": "cpu (test mode: wall-clock times, no L2 control)", "uuid": "cpu",
                "timer": self.timer.name, "timer_note": "CPU test mode", "bandwidth": None,
            }
            if slowdown_fraction() is not None:
                self.info["test_slowdown"] = slowdown_fraction()
            return
        if not torch.cuda.is_available():
            raise RuntimeError("the worker sees no CUDA device")
        self.device = torch.device("cuda", 0)
        self.compiles = install_compile_log()
        # The timer first: CUPTI's kernel activity is enabled before this process creates its
        # CUDA context and long before any graph is captured.
        self.timer, timer_note = self._pick_timer()
        torch.cuda.set_device(self.device)
        props = torch.cuda.get_device_properties(self.device)
        uuid = normalize_uuid(getattr(props, "uuid", "unknown"))
        l2_bytes = int(getattr(props, "L2_cache_size", 0) or 0)
        # Read from the device, never assumed (the H100 has 50 MiB, the H200 60). A device that
        # does not report it gets a flush far larger than any L2 shipped so far.
        self.flusher = L2Flusher(l2_bytes or UNKNOWN_L2_FLUSH_BYTES // 2, self.device)
        self.clocks, clock_note = open_clock_monitor(uuid)
        known = config.known_devices.get(uuid, {}).get("bandwidth")
        bandwidth = dict(known) if known else calibrate_copy(self.device, l2_bytes or UNKNOWN_L2_FLUSH_BYTES)
        bandwidth["datasheet_tbps"] = datasheet_tbps(props.name)
        self.info = {
            "index": config.gpu_index, "name": props.name, "uuid": uuid,
            "sm_count": props.multi_processor_count, "l2_bytes": l2_bytes, "memory_bytes": props.total_memory,
            "capability": f"{props.major}.{props.minor}", "driver": driver_version(),
            "cuda_runtime": torch.version.cuda, "timer": self.timer.name, "timer_note": timer_note,
            "clock_source": self.clocks.source if self.clocks else None, "clock_note": clock_note,
            "max_sm_mhz": self.clocks.max_sm_mhz if self.clocks else None,
            "max_mem_mhz": self.clocks.max_mem_mhz if self.clocks else None, "bandwidth": bandwidth,
        }
        if slowdown_fraction() is not None:
            self.info["test_slowdown"] = slowdown_fraction()

    # -- setup -----------------------------------------------------------------------------

    def _pick_timer(self) -> tuple[Timer, str]:
        """CUPTI if it imports and records a test kernel, else CUDA events (with the reason)."""
        wanted = os.environ.get(TIMER_ENV, "cupti")
        if wanted == "cuda-event":
            return CudaEventTimer(self.device), f"{TIMER_ENV}=cuda-event"
        if wanted != "cupti":
            raise RuntimeError(f"{TIMER_ENV}={wanted!r}; allowed: cupti, cuda-event")
        try:
            timer = CuptiTimer(self.sync)
        except Exception as exc:  # noqa: BLE001 - no cupti-python, no CUPTI library, ...
            return CudaEventTimer(self.device), f"CUPTI unavailable ({describe_exception(exc)})"
        probe = self.torch.ones(1 << 16, device=self.device)
        try:
            timer.measure(lambda: probe.mul_(1.0), lambda: None, 3)
        except Exception as exc:  # noqa: BLE001
            try:
                timer.close()
            except Exception:  # noqa: BLE001
                pass
            return CudaEventTimer(self.device), f"CUPTI recorded nothing usable ({describe_exception(exc)})"
        return timer, ""

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    @property
    def peak_tbps(self) -> float | None:
        bw = self.info.get("bandwidth") or {}
        return bw.get("measured_tbps")

    # -- one task --------------------------------------------------------------------------

    def run(self, task: Task, emit: Emit) -> bool:
        """Measure every impl of the task, emitting phases and one result each. Returns False when
        the worker must exit (a CUDA fault left the context unusable)."""
        from ssmbench.families import make_workload
        from ssmbench.impls.registry import registry

        impls = registry()
        setup = self.config.setup_timeout_s
        emit(("phase", None, "workload", setup))
        try:
            workload = make_workload(task.case, self.device)
            self.sync()
            digest = workload.work_digest()
        except Exception as exc:  # noqa: BLE001
            kind = classify_error(exc)
            message = f"workload: {describe_exception(exc)}"
            for name in task.impls:
                emit(("result", self._record(task, name, "error", message).to_dict()))
            return kind != "fatal"
        for name in task.impls:
            emit(("phase", name, "build", setup))
            start = time.perf_counter()
            if self.compiles is not None:
                self.compiles.take()  # what came before this pair is not its own
            try:
                record = self._measure(task, impls[name], workload, emit)
                kind = "ok"
            except Exception as exc:  # noqa: BLE001 - recorded, the session goes on
                kind = classify_error(exc)
                record = self._record(task, name, "error", describe_exception(exc))
                if kind == "oom":
                    record.message = f"out of memory: {record.message}"
            record.seconds = time.perf_counter() - start
            record.workload = digest
            if self.compiles is not None and (compiled := self.compiles.take()):
                record.notes = [*(record.notes or []), describe_compiles(compiled)]
            emit(("result", record.to_dict()))
            if kind == "fatal":
                return False
            self.free_memory(pair=True)
        del workload
        self.free_memory()
        return True

    def free_memory(self, *, pair: bool = False) -> None:
        """Free what a whole case left (the workload included; the tuner: a duel's targets): a full
        garbage collection (device buffers kept alive by reference cycles) and the allocator's cache.
        After one pair of a case only when the device still holds more than `LEFTOVER_FRACTION` of its memory: a full
        collection costs ~0.1 s in a worker (H200 profile of a warm headline sweep: 50 calls, 4.7 s
        of 30 s; docs/perf-notes.md, session 9), buffers freed by reference counting return at once
        anyway, and the caching allocator frees its cache itself before it would fail an
        allocation."""
        if pair:
            if self.device.type != "cuda":
                return
            total = self.torch.cuda.get_device_properties(self.device).total_memory
            if self.torch.cuda.memory_allocated(self.device) <= LEFTOVER_FRACTION * total:
                return
        gc.collect()
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def _record(self, task: Task, impl: str, status: str, message: str = "", **fields: Any) -> CaseRecord:
        return CaseRecord(id=task.case.id, impl=impl, sweep=task.sweep, status=status, message=message,
                          params=case_params(task.case), gpu=self.info.get("uuid"), timer=self.timer.name,
                          **fields)

    def _measure(self, task: Task, impl: Any, workload: Any, emit: Emit) -> CaseRecord:
        case, setup = task.case, self.config.setup_timeout_s
        target = Target(case, impl, workload, self.device)
        target.build()
        emit(("phase", impl.name, "verify", setup))
        verdict = target.verify()
        if verdict.status == "error":
            return self._record(task, impl.name, "error", verdict.message)
        checked = verify_summary(verdict.comparisons)
        if verdict.status == "fail":
            return self._record(task, impl.name, "fail", f"verification failed: {verdict.message}", verify=checked)

        emit(("phase", impl.name, "capture", setup))
        notes: list[str] = verdict.notes
        target.restore()
        chain = target.chain
        notes += chain.notes
        run, launch, note = self._capture(chain)
        notes += [note] if note else []
        if launch == "graph" and chain.restore is not None:
            chain.restore()
            run()
            self.sync()
            replayed = target.compare()
            if replayed.status == "fail":
                return self._record(task, impl.name, "fail", f"graph replay differs from the eager run: "
                                    f"{replayed.message}", verify=verify_summary(replayed.comparisons),
                                    launch=launch)

        rule = StopRule.from_measure(task.measure)
        emit(("phase", impl.name, "time", rule.timeout_s + self.config.grace_s))
        prepare = target.ready(self.flusher)
        fraction = slowdown_fraction()
        if fraction is not None:  # TEST ONLY (measure/slowdown.py): a chain made slower on purpose
            run, launch, note = slow_down(chain, run, self._capture, lambda r: self._span_us(r, prepare), fraction,
                                          self.device)
            notes.append(note)
        for _ in range(int(task.measure.get("warmup", 0))):
            prepare()
            run()
        self.sync()
        try:
            samples, rounds, stop = self._sample(run, prepare, rule)
        except TimerError as exc:  # CUPTI lost records: events for this and every later pair
            self.timer = CudaEventTimer(self.device)
            self.info["timer"] = self.timer.name
            notes.append(f"CUPTI failed ({exc}); this worker switched to CUDA events")
            samples, rounds, stop = self._sample(run, prepare, rule)
        del run, chain, target
        return self._ok_record(task, impl, workload, samples, rounds, stop, rule, checked, launch, notes)

    def capture(self, chain: Any) -> tuple[Callable[[], None], str, str]:
        """The chain as it is timed (a graph replay, or eager with the reason): the tuner's too."""
        return self._capture(chain)

    def _capture(self, chain: Any) -> tuple[Callable[[], None], str, str]:
        """A CUDA-graph replay of the chain, or the chain itself (eager) with the reason."""
        if self.device.type != "cuda":
            return chain, "eager", ""
        torch = self.torch
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the capture stream, as torch recommends
            chain()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.sync()
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: CUPTI's buffer thread may touch CUDA while this thread captures.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                chain()
        except Exception as exc:  # noqa: BLE001 - e.g. a host sync inside a reference chain
            del graph
            self.sync()  # a real fault would surface here, and is fatal
            return chain, "eager", f"not graph-capturable, timed eagerly: {describe_exception(exc)}"
        self.sync()
        return graph.replay, "graph", ""

    def _span_us(self, run: Callable[[], None], prepare: Callable[[], None]) -> float:
        """Median span of a short round (the test slowdown's calibration)."""
        from ssmbench.measure.slowdown import CALIBRATION_SAMPLES
        from ssmbench.output.stats import median

        return median([s.span_us for s in self.timer.measure(run, prepare, CALIBRATION_SAMPLES)])

    def _sample(self, run: Callable[[], None], prepare: Callable[[], None],
                rule: StopRule) -> tuple[list[Sample], list[tuple[int, Any]], str]:
        stopper = Stopper(rule)
        samples: list[Sample] = []
        rounds: list[tuple[int, Any]] = []

        def take(n: int) -> list[float]:
            got = self.timer.measure(run, prepare, n)
            samples.extend(got)
            rounds.append((len(got), self.clocks.read() if self.clocks else None))
            return [s.span_us for s in got]

        stop = run_until_stopped(stopper, take)
        return samples, rounds, stop

    def _ok_record(self, task: Task, impl: Any, workload: Any, samples: list[Sample], rounds: list,
                   stop: str, rule: StopRule, checked: dict, launch: str, notes: list[str]) -> CaseRecord:
        spans = [round(s.span_us, 4) for s in samples]  # 0.1 ns: below any timer's resolution
        stats = summarize(spans)
        nbytes = impl.bytes_moved(task.case, workload)
        median_us = stats["median_us"]
        datasheet = (self.info.get("bandwidth") or {}).get("datasheet_tbps")
        clock = summarize_clocks(rounds, self.clocks.max_sm_mhz if self.clocks else None,
                                 self.clocks.source if self.clocks else None)
        noise = stats["noise"] if stats["noise"] is not None else float("nan")
        if stop == "precise":
            notes.append(f"spread {noise:.3f} above max_noise {rule.max_noise}: stopped when the median's 99% "
                         f"interval was within +-{median_ci_halfwidth(spans) * 100:.2f}% (max_median_ci "
                         f"{rule.max_median_ci})")
        elif stop != "converged":
            notes.append(f"stopped at {stop} with noise {noise:.3f} (max_noise {rule.max_noise})")
        if clock.get("throttled_samples"):
            notes.append(f"{clock['throttled_samples']} sample(s) taken while throttled: "
                         f"{', '.join(clock['throttle_reasons'])}")
        if self.timer.name == "cuda-event":
            notes.append("CUDA-event timer: the span includes launch gaps between kernels")
        return self._record(
            task, impl.name, "ok", samples_us=spans, median_us=median_us, p10_us=stats["p10_us"],
            p90_us=stats["p90_us"], noise=stats["noise"], n_samples=len(spans), stop=stop,
            kernels_us=kernel_medians(samples), bytes=nbytes, tbps=tbps(nbytes, median_us),
            sol_pct=sol_pct(nbytes, median_us, self.peak_tbps),
            sol_datasheet_pct=sol_pct(nbytes, median_us, datasheet), verify=checked, clock=clock,
            launch=launch, notes=notes,
        )
