"""One (case, impl) pair, resolved from a spec, and its chain run inside an NVTX range.

Resolution (`resolve`) only reads the spec: the case by its id as `ssmbench plan` prints it, the
impl (default: the sweep's baseline when it runs the case, else the first impl that does). The
build is the sweep worker's, shared: `ssmbench.measure.target.prepared_target` (workload on the
device, ``impl.build``, one run and the correctness gate, then the per-sample preparation:
``Chain.restore`` and the case's L2 mode). `run_in_range` runs the chain once inside an NVTX
start/end range (the tools' filter) and, for nsys, inside cudaProfilerStart/Stop.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssmbench.errors import UsageError
from ssmbench.measure.target import Target


@dataclass
class Selection:
    """What the spec says about the pair: no device touched yet."""

    sweep: Any
    case: Any
    impl: Any


def find_case(sweep_file: Any, case_id: str) -> tuple[Any, Any]:
    """The (sweep, case) whose id is ``case_id`` (or the one case a glob matches); a clear error
    with the closest ids otherwise."""
    from ssmbench.spec.expand import expand

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
    from ssmbench.impls.registry import registry
    from ssmbench.runs.planning import impl_plan

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
    from ssmbench.impls.registry import registry
    from ssmbench.spec.load import load_sweep_file

    sweep_file = load_sweep_file(spec, impl_names=list(registry()))
    sweep, case = find_case(sweep_file, case_id)
    return Selection(sweep, case, pick_impl(sweep, case, impl_name))


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
