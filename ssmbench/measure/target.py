"""One (case, impl) on a device: build -> run once -> verify -> prepare. The one place this is
written; `ssmbench check` (`ssmbench.runs.check`), the sweep's worker (`ssmbench.measure.runner`),
`ssmbench profile` and `ssmbench validate-bytes` (`ssmbench.profiling`) all use it.

The steps, in order (each raises on an exception: the caller decides what an exception is):

1. `Target.on`: the workload on the device (or a shared one, built once per case);
2. `Target.build`: ``impl.build`` (Triton compiles on first use);
3. `Target.verify`: run the chain once, sync, compare with the fp64 reference (`ssmbench.measure.verify`,
   its tolerances); a `Verdict`: ``ok``, ``fail`` (outputs differ) or ``error`` (nothing to verify);
4. `Target.ready`: the per-run preparation, outside any measured span or profiled range: the
   chain's ``restore`` and the case's L2 mode (`ssmbench.measure.l2`) on the hot tensors.

The sweep's worker calls them one by one (it emits a ``phase`` before each, which its parent's
deadlines hang on); `attempt` is the never-raising whole for `check`; `prepared_target` is the
profilers' (verification failure raises `VerificationFailed` unless forced, and the chain's state
is put back). Also here: `resolve_device` (``--device``), `describe_exception` (how an error is
said in every record and line), and the NVTX range name a target runs in when profiled.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ssmbench.errors import UsageError

RANGE_PREFIX = "ssmbench"
"""Every NVTX range this package opens starts with this word (validate-bytes filters on it)."""

NOTHING_TO_VERIFY = "the impl returned nothing to verify"


def resolve_device(device: str, *, indexed: bool = False) -> Any:
    """The torch device ``--device`` names. ``auto``: CUDA when torch sees a CUDA device, else the
    CPU. ``cuda`` / ``cuda:N`` must exist; anything else is a usage error. ``indexed``: a bare
    ``cuda`` becomes ``cuda:0`` (a caller that sets the current device or records which one)."""
    import torch

    allowed = f"--device {device!r}: allowed: auto, cpu, cuda, cuda:N"
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("--device cuda asked for, but torch sees no CUDA device")
        if device != "cpu" and not device.startswith("cuda"):
            raise UsageError(allowed)
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise UsageError(allowed) from None
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    if indexed and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", 0)
    return dev


def describe_exception(exc: BaseException) -> str:
    """``Type: message (file:line)`` of the innermost frame, first line of the message only."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}{where}"


def range_name(impl_name: str, case_id: str) -> str:
    """The NVTX start/end range around one chain launch: ``ssmbench <impl> <case id>``.

    Case ids and impl names hold none of the characters ncu's NVTX filter treats specially
    (``@`` domain separator, ``/`` and ``]`` push/pop stack markers) nor the ``:`` that separates
    fields in ncu's CSV range column; checked here so a plugin's odd name fails clearly."""
    for part in (impl_name, case_id):
        bad = sorted(set(part) & set("@/]:[\"*"))
        if bad:
            raise UsageError(f"{part!r}: cannot be put in an NVTX range filter (characters {''.join(bad)!r})")
    return f"{RANGE_PREFIX} {impl_name} {case_id}"


@dataclass
class Verdict:
    """What one verification said: ``ok``, ``fail`` (outputs differ; ``message`` lists the
    failing comparisons) or ``error`` (the impl returned nothing to verify)."""

    status: str  # "ok" | "fail" | "error"
    comparisons: list[Any] = field(default_factory=list)
    message: str = ""

    @classmethod
    def of(cls, comparisons: list[Any]) -> Verdict:
        if not comparisons:
            return cls("error", [], NOTHING_TO_VERIFY)
        bad = "; ".join(c.describe() for c in comparisons if not c.ok)
        return cls("fail" if bad else "ok", list(comparisons), bad)

    @property
    def notes(self) -> list[str]:
        """A line per comparison verified at a tolerance with a note (e.g. a widened one)."""
        return [f"{c.name} verified at {c.tolerance:.0e} ({c.note})" for c in self.comparisons if c.note]


class VerificationFailed(Exception):
    """The chain's outputs differ from the reference: profiling it would measure a wrong kernel."""


def _nothing() -> None:
    return None


@dataclass
class Target:
    """One (case, impl) on a device: the workload, the chain once built, its last verdict, and
    ``prepare`` (run before each timed sample or profiled launch, outside it, once `ready`)."""

    case: Any
    impl: Any
    workload: Any
    device: Any
    chain: Any = None
    verdict: Verdict | None = None
    prepare: Callable[[], None] = _nothing
    verify_notes: list[str] = field(default_factory=list)
    l2_bytes: int | None = None

    @classmethod
    def on(cls, case: Any, impl: Any, device: Any, workload: Any = None) -> Target:
        """Step 1: the target on ``device``, with ``workload`` (shared by a case's impls) or one
        built here."""
        if workload is None:
            from ssmbench.families import make_workload

            workload = make_workload(case, device)
        return cls(case, impl, workload, device)

    def build(self) -> None:
        """Step 2: the chain."""
        self.chain = self.impl.build(self.case, self.workload)

    def verify(self) -> Verdict:
        """Step 3: run the chain once, sync, verify its outputs."""
        self.chain()
        self.sync()
        return self.compare()

    def compare(self) -> Verdict:
        """The chain's current outputs against the reference (e.g. after a graph replay)."""
        from ssmbench.measure.verify import verify

        self.verdict = Verdict.of(verify(self.case, self.workload, self.chain.outputs()))
        return self.verdict

    def ready(self, flusher: Any) -> Callable[[], None]:
        """Step 4: ``prepare`` = the chain's restore, then the case's L2 mode (``flusher``: None
        where L2 is not controlled) on the chain's hot tensors (default: the in_proj outputs)."""
        from ssmbench.measure.l2 import compose, in_proj_outputs, l2_action

        hot = self.chain.hot if self.chain.hot is not None else in_proj_outputs(self.workload)
        self.prepare = compose(self.chain.restore, l2_action(self.case.l2, flusher, hot))
        return self.prepare

    def restore(self) -> None:
        """Put the state the chain mutates back as the workload built it."""
        if self.chain.restore is not None:
            self.chain.restore()

    def sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def warm_up(self, runs: int) -> None:
        for _ in range(runs):
            self.prepare()
            self.chain()
        self.sync()

    def byte_model(self) -> int | None:
        return self.impl.bytes_moved(self.case, self.workload)

    @property
    def range_name(self) -> str:
        return range_name(self.impl.name, self.case.id)


@dataclass
class Attempt:
    """`attempt`'s result: never an exception. ``message`` is the error's description (the
    exception's, or "the impl returned nothing to verify"); a failure's comparisons say why."""

    status: str  # "ok" | "fail" | "error"
    comparisons: list[Any] = field(default_factory=list)
    message: str = ""
    raised: bool = False
    """The error is an exception (not an empty verification)."""


def attempt(case: Any, impl: Any, workload: Any) -> Attempt:
    """Build, run once and verify ``impl`` on ``case`` with ``workload`` (on its device); never raises."""
    try:
        target = Target(case, impl, workload, workload.start_state.device)
        target.build()
        verdict = target.verify()
    except Exception as exc:  # noqa: BLE001 - a failing pair is recorded, the run goes on
        return Attempt("error", message=describe_exception(exc), raised=True)
    if verdict.status == "error":
        return Attempt("error", message=verdict.message)
    return Attempt(verdict.status, verdict.comparisons)


def prepared_target(case: Any, impl: Any, device: Any, *, force: bool = False, workload: Any = None) -> Target:
    """The profilers' target: built, verified (raises VerificationFailed unless ``force``; a
    failure or an empty verification becomes a note), ready with a real L2 flusher on CUDA, and
    the chain's state put back."""
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    target = Target.on(case, impl, device, workload)
    target.build()
    verdict = target.verify()
    if verdict.status == "error":
        target.verify_notes.append(verdict.message)
    if verdict.status == "fail":
        if not force:
            raise VerificationFailed(f"{impl.name} on {case.id} fails verification: {verdict.message}")
        target.verify_notes.append(f"verification FAILED (profiled anyway, --force): {verdict.message}")
    flusher = None
    if device.type == "cuda":
        import torch

        from ssmbench.measure.l2 import L2Flusher

        props = torch.cuda.get_device_properties(device)
        target.l2_bytes = int(getattr(props, "L2_cache_size", 0) or 50 << 20)
        flusher = L2Flusher(target.l2_bytes, device)
    target.ready(flusher)
    target.restore()
    return target
