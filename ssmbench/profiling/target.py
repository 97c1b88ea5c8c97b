"""One (case, impl) pair, resolved from a spec and built exactly as the sweep's worker builds it.

Resolution (`resolve`) only reads the spec: the case by its id as `ssmbench plan` prints it, the
impl (default: the sweep's baseline when it runs the case, else the first impl that does). The
build (`build_target`) is the worker's: workload on the device, ``impl.build``, one run and the
correctness gate, then the per-sample preparation (``Chain.restore`` and the case's L2 mode).
`run_in_range` runs the chain once inside an NVTX start/end range (the tools' filter) and, for
nsys, inside cudaProfilerStart/Stop.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmbench.errors import UsageError

RANGE_PREFIX = "ssmbench"
"""Every NVTX range this package opens starts with this word (validate-bytes filters on it)."""


@dataclass
class Selection:
    """What the spec says about the pair: no device touched yet."""

    sweep: Any
    case: Any
    impl: Any


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


def find_case(sweep_file: Any, case_id: str) -> tuple[Any, Any]:
    """The (sweep, case) whose id is ``case_id`` (or the one case a glob matches); a clear error
    with the closest ids otherwise."""
    from ssmbench.expand import expand

    everything = [(sweep, case) for sweep in sweep_file.sweeps for case in expand(sweep).cases]
    exact = [(s, c) for s, c in everything if c.id == case_id]
    if exact:
        return exact[0]
    globbed = [(s, c) for s, c in everything if fnmatch.fnmatchcase(c.id, case_id)]
    if len(globbed) == 1:
        return globbed[0]
    if len(globbed) > 1:
        shown = ", ".join(c.id for _, c in globbed[:5]) + (", ..." if len(globbed) > 5 else "")
        raise UsageError(f"--case {case_id!r} matches {len(globbed)} cases ({shown}); give one id "
                         "(`ssmbench plan SPEC` lists them)")
    ids = [c.id for _, c in everything]
    close = difflib.get_close_matches(case_id, ids, n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise UsageError(f"--case {case_id!r}: no such case in the spec ({len(ids)} cases){hint}; "
                     "`ssmbench plan SPEC` lists the ids")


def pick_impl(sweep: Any, case: Any, impl_name: str | None) -> Any:
    """The named impl (it must run the case), else the sweep's baseline when it runs the case,
    else the first of the sweep's impls that does."""
    from ssmbench.planning import impl_plan
    from ssmbench.registry import registry

    impls = registry()
    if impl_name is not None:
        if impl_name not in impls:
            raise UsageError(f"--impl {impl_name!r}: unknown; allowed: {', '.join(sorted(impls))}")
        reason = impl_plan(impls[impl_name], case, sweep)
        if reason is not None:
            raise UsageError(f"--impl {impl_name} does not run {case.id}: {reason}")
        return impls[impl_name]
    order = [sweep.spec.baseline] if sweep.spec.baseline else []
    order += [n for n in sweep.spec.impls if n not in order]
    reasons = []
    for name in order:
        reason = impl_plan(impls[name], case, sweep)
        if reason is None:
            return impls[name]
        reasons.append(f"{name}: {reason}")
    raise UsageError(f"no impl of sweep {sweep.name!r} runs {case.id} ({'; '.join(reasons)}); name one with --impl")


def resolve(spec: Path, case_id: str, impl_name: str | None) -> Selection:
    from ssmbench.registry import registry
    from ssmbench.spec import load_sweep_file

    sweep_file = load_sweep_file(spec, impl_names=list(registry()))
    sweep, case = find_case(sweep_file, case_id)
    return Selection(sweep, case, pick_impl(sweep, case, impl_name))


class VerificationFailed(Exception):
    """The chain's outputs differ from the reference: profiling it would measure a wrong kernel."""


@dataclass
class Target:
    """A built chain, ready to run: ``prepare`` before each run (restore + L2 mode), outside any
    profiled range."""

    case: Any
    impl: Any
    workload: Any
    chain: Any
    device: Any
    prepare: Callable[[], None]
    verify_notes: list[str] = field(default_factory=list)
    l2_bytes: int | None = None

    @property
    def range_name(self) -> str:
        return range_name(self.impl.name, self.case.id)

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


def resolve_device(device: str) -> Any:
    """``auto`` is the sweep worker's device (cuda:0) when there is one, else the CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"--device {device!r}: allowed: auto, cpu, cuda, cuda:N")
    return torch.device(device)


def build_target(selection: Selection, device: Any, *, force: bool = False, workload: Any = None) -> Target:
    """The worker's build: workload on ``device`` (or the one given), chain, one run, correctness
    gate (raises VerificationFailed unless ``force``), then the chain's state put back."""
    from ssmbench.measure.l2 import L2Flusher, compose, in_proj_outputs, l2_action
    from ssmbench.verify import verify
    from ssmbench.workload import make_workload

    case, impl = selection.case, selection.impl
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    if workload is None:
        workload = make_workload(case, device)
    chain = impl.build(case, workload)
    chain()
    target = Target(case, impl, workload, chain, device, prepare=lambda: None)
    target.sync()
    comparisons = verify(case, workload, chain.outputs())
    bad = [c for c in comparisons if not c.ok]
    if not comparisons:
        target.verify_notes.append("the impl returned nothing to verify")
    if bad:
        text = "; ".join(c.describe() for c in bad)
        if not force:
            raise VerificationFailed(f"{impl.name} on {case.id} fails verification: {text}")
        target.verify_notes.append(f"verification FAILED (profiled anyway, --force): {text}")
    flusher = None
    if device.type == "cuda":
        import torch

        props = torch.cuda.get_device_properties(device)
        target.l2_bytes = int(getattr(props, "L2_cache_size", 0) or 50 << 20)
        flusher = L2Flusher(target.l2_bytes, device)
    hot = chain.hot if chain.hot is not None else in_proj_outputs(workload)
    target.prepare = compose(chain.restore, l2_action(case.l2, flusher, hot))
    if chain.restore is not None:
        chain.restore()
    return target


def run_in_range(target: Target, *, cuda_profiler: bool = False, name: str | None = None) -> None:
    """Prepare (outside the range), then one eager chain launch inside the NVTX start/end range
    (a process-wide range: kernels enqueued from any thread fall inside), synchronized before the
    range ends so every kernel of the chain has run inside it."""
    import nvtx

    target.prepare()
    target.sync()
    if cuda_profiler:
        import torch

        torch.cuda.profiler.start()
    handle = nvtx.start_range(name or target.range_name)
    try:
        target.chain()
        target.sync()
    finally:
        nvtx.end_range(handle)
        if cuda_profiler:
            import torch

            torch.cuda.profiler.stop()
