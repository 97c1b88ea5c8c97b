"""The compile pre-pass on a CPU: it groups pairs by compile key (no two processes compile the same
kernel), runs the groups in parallel processes, and a pair failing there is recorded by the sweep
(error, with the reason) while the sweep goes on and times the rest; off by default on the CPU."""

from __future__ import annotations

import io
from pathlib import Path

import test_sweep_cli  # noqa: F401 - registers the planted impls (test.raise, ...) here and in workers
from rich.console import Console

from ssmbench.impls.knobs import Knob, KnobSpace
from ssmbench.impls.registry import PLUGINS_ENV, registry
from ssmbench.output.results import load_results
from ssmbench.runs.prewarm import Job, compile_key, default_workers, plan_groups, prewarm
from ssmbench.runs.sweep.compile import compile_workers
from ssmbench.runs.sweep.options import SweepOptions
from ssmbench.runs.sweep.run import DEVICE_ENV, run_sweep
from ssmbench.spec.expand import expand
from ssmbench.spec.load import load_sweep_file

ROOT = Path(__file__).resolve().parent.parent
HEADLINE = ROOT / "sweeps" / "nemotron3-super-tp8.yaml"


def headline_jobs(impl: str) -> list[Job]:
    sweep = load_sweep_file(HEADLINE).sweeps[0]
    impl_obj = registry()[impl]
    return [Job(sweep.name, c, impl) for c in expand(sweep).cases if impl_obj.supports(c) is None]


def test_groups_follow_the_compile_key() -> None:
    impls = registry()
    jobs = headline_jobs("triton.intermediate")
    groups = plan_groups(jobs, impls)
    # batch is a runtime value and the impl ignores the window: one group per format and default
    # knobs (SR at batch * heads <= 32 takes 2 warps: another kernel)
    tunable = impls["triton.intermediate"].tunable

    def kernel(job: Job) -> tuple:
        return (job.case.state_dtype, job.case.rounding, tuple(tunable.default_config(job.case).items()))

    assert len({j.case.batch for j in jobs}) > 1 and len({j.case.window for j in jobs}) > 1
    for group in groups:
        assert len({kernel(j) for j in group}) == 1
    assert len(groups) == len({kernel(j) for j in jobs}) < len(jobs)
    assert [len(g) for g in groups] == sorted((len(g) for g in groups), reverse=True)  # largest first

    cp = headline_jobs("triton.checkpoint")[0]
    default = impls["triton.checkpoint"].tunable.default_config(cp.case)
    other = compile_key(Job(cp.sweep, cp.case, cp.impl, {**default, "num_warps": 8}), impls)
    assert other != compile_key(Job(cp.sweep, cp.case, cp.impl, default), impls)  # compile-time: another kernel
    # a launch-only knob (constexpr=False: the grid) selects no other kernel
    space = KnobSpace((Knob("block", (16, 32), "tile"), Knob("grid", (2, 4), "programs per SM", constexpr=False)))
    assert space.compile_key({"block": 16, "grid": 2}) == space.compile_key({"block": 16, "grid": 4})
    assert space.compile_key({"block": 16, "grid": 2}) != space.compile_key({"block": 32, "grid": 2})


def test_off_on_the_cpu_unless_asked() -> None:
    assert default_workers("cpu") == 0 and compile_workers(None, "cpu") == 0
    assert 1 <= compile_workers(None, "cuda") <= 16
    assert compile_workers(3, "cpu") == 3


def test_prewarm_runs_groups_in_parallel_processes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(PLUGINS_ENV, "test_sweep_cli")
    spec = test_sweep_cli.tiny_spec(tmp_path, ["reference.sequential", "test.raise"], batch="[1, 2]")
    sweep = load_sweep_file(spec).sweeps[0]
    jobs = [Job(sweep.name, c, i) for c in expand(sweep).cases for i in ("reference.sequential", "test.raise")]
    done = prewarm(jobs, 4, ["cpu"], ["test_sweep_cli"], deadline_s=120)
    assert done.groups == 2 and done.processes == 2 and not done.unreported
    status = {(o.job.impl, o.job.case.batch): (o.status, o.message) for o in done.outcomes}
    assert status[("reference.sequential", 1)] == ("ok", "")
    assert status[("test.raise", 2)][0] == "error" and "planted bug" in status[("test.raise", 2)][1]


def sweep_with_prepass(tmp_path: Path, monkeypatch, impls: list[str]) -> tuple[int, str, dict]:
    """A tiny CPU sweep of ``impls`` with a 2-process pre-pass: (exit code, output, records by impl)."""
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    monkeypatch.setenv(PLUGINS_ENV, "test_sweep_cli")
    out = tmp_path / "r.json"
    text = io.StringIO()
    code = run_sweep(SweepOptions(spec=test_sweep_cli.tiny_spec(tmp_path, impls), output=out, compile_workers=2),
                     Console(file=text, width=200))
    return code, text.getvalue(), {r.impl: r for r in load_results(out).records.values()}


def test_a_pair_failing_in_the_pre_pass_is_recorded_and_the_sweep_goes_on(tmp_path: Path, monkeypatch) -> None:
    code, text, records = sweep_with_prepass(tmp_path, monkeypatch,
                                             ["reference.sequential", "test.raise", "reference.intermediate"])
    assert code == 1  # an error was recorded
    assert "compiled: 3 kernel group(s) on 2 process(es)" in text
    assert "1 failed, 0 left to the timing workers" in text
    assert records["test.raise"].status == "error"
    assert records["test.raise"].message.startswith("compile pre-pass: ValueError: planted bug")
    assert records["reference.sequential"].status == "ok" and records["reference.sequential"].samples_us
    assert records["reference.intermediate"].status == "ok"


def test_out_of_memory_in_the_pre_pass_leaves_the_pair_to_the_timing_worker(tmp_path: Path, monkeypatch) -> None:
    """The pre-pass's processes share the GPU, so an out-of-memory error there says nothing final
    about the pair: it is not recorded, and the timing worker (the GPU to itself) measures it."""
    code, text, records = sweep_with_prepass(tmp_path, monkeypatch, ["reference.sequential", "test.oom"])
    assert code == 0, text
    assert "0 failed, 1 left to the timing workers" in text
    assert records["test.oom"].status == "ok" and records["test.oom"].samples_us


def test_a_compile_pool_is_kept_across_calls_and_dropped_after_a_cut(tmp_path: Path, monkeypatch) -> None:
    """The tuner's `CompilePool`: two prewarm calls use the same processes (no second start), both
    report every job; a call cut by its deadline closes the pool, and the next call starts anew."""
    from ssmbench.runs.prewarm import CompilePool

    monkeypatch.setenv(PLUGINS_ENV, "test_sweep_cli")
    spec = test_sweep_cli.tiny_spec(tmp_path, ["reference.sequential", "test.raise"], batch="[1, 2]")
    sweep = load_sweep_file(spec).sweeps[0]
    jobs = [Job(sweep.name, c, i) for c in expand(sweep).cases for i in ("reference.sequential", "test.raise")]
    with CompilePool(2) as pool:
        first = prewarm(jobs, 2, ["cpu"], ["test_sweep_cli"], deadline_s=120, pool=pool)
        kept = pool._pool
        second = prewarm(jobs, 2, ["cpu"], ["test_sweep_cli"], deadline_s=120, pool=pool)
        assert kept is not None and pool._pool is kept
        for done in (first, second):
            assert not done.unreported and len(done.outcomes) == len(jobs)
        cut = prewarm(jobs, 2, ["cpu"], ["test_sweep_cli"], deadline_s=0, pool=pool)
        assert len(cut.unreported) == len(jobs) and pool._pool is None
    assert pool._pool is None


def test_a_group_holds_one_case_workload_at_a_time_and_none_after(tmp_path: Path, monkeypatch) -> None:
    """The last case's workload is released before the next is built (the GPU's cache is emptied
    then), and nothing is held when the group returns (a kept `CompilePool` process)."""
    import gc
    import weakref

    import torch

    import ssmbench.families
    import ssmbench.runs.prewarm as prewarm_mod
    from ssmbench.measure.target import Attempt

    class Workload:
        pass

    built: list[weakref.ref] = []

    def make_workload(case, device):
        assert all(ref() is None for ref in built), "the last case's workload is still held"
        workload = Workload()
        built.append(weakref.ref(workload))
        return workload

    monkeypatch.setattr(ssmbench.families, "make_workload", make_workload)
    monkeypatch.setattr(prewarm_mod, "attempt", lambda case, impl, workload: Attempt("ok"))
    spec = test_sweep_cli.tiny_spec(tmp_path, ["reference.sequential"], batch="[1, 2, 3]")
    jobs = [Job("s", c, "reference.sequential") for c in expand(load_sweep_file(spec).sweeps[0]).cases]
    threads = torch.get_num_threads()
    try:
        gc.disable()  # only references count, as they do for a CUDA tensor's memory
        number, done, faulted = prewarm_mod.run_group((7, jobs, "cpu", []))
        assert number == 7 and len(done) == len(jobs) == len(built) == 3 and not faulted
        assert all(ref() is None for ref in built)
    finally:
        gc.enable()
        torch.set_num_threads(threads)


def test_a_cuda_fault_is_the_faulting_pairs_error_and_its_process_is_not_reused(tmp_path: Path,
                                                                               monkeypatch) -> None:
    """A pair whose own attempt faults (its process's CUDA context is gone) is reported as an error
    with the fault, not left unreported; the pairs after it in that group go to the timing
    workers; a kept `CompilePool` with a faulted process is restarted before the next call (the
    tuner's challengers would otherwise land in a dead context)."""
    from ssmbench.runs.prewarm import CompilePool

    monkeypatch.setenv(PLUGINS_ENV, "test_sweep_cli")
    spec = test_sweep_cli.tiny_spec(tmp_path, ["reference.sequential", "test.cudafault"], batch="[1, 2]")
    sweep = load_sweep_file(spec).sweeps[0]
    faulty = [Job(sweep.name, c, "test.cudafault") for c in expand(sweep).cases]
    good = [Job(sweep.name, c, "reference.sequential") for c in expand(sweep).cases]
    with CompilePool(2) as pool:
        done = prewarm(faulty + good, 2, ["cpu"], ["test_sweep_cli"], deadline_s=120, pool=pool)
        errors = [o for o in done.outcomes if o.status == "error"]
        assert [o.job for o in errors] == [faulty[0]]  # the first faulting pair, with its message
        assert "illegal memory access" in errors[0].message
        assert done.unreported == faulty[1:]  # the rest of the faulted group: left to the timers
        assert sorted((o.job.case.id, o.status) for o in done.outcomes if o.job in good) == sorted(
            (j.case.id, "ok") for j in good)
        assert pool._pool is None  # not reused after a fault
        again = prewarm(good, 2, ["cpu"], ["test_sweep_cli"], deadline_s=120, pool=pool)
        assert not again.unreported and all(o.status == "ok" for o in again.outcomes)
        assert pool._pool is not None  # a fresh pool, kept as before


def test_a_pair_faulting_in_the_pre_pass_is_recorded_and_the_sweep_goes_on(tmp_path: Path, monkeypatch) -> None:
    code, text, records = sweep_with_prepass(tmp_path, monkeypatch, ["reference.sequential", "test.cudafault"])
    assert code == 1, text  # an error was recorded
    assert records["reference.sequential"].status == "ok" and records["reference.sequential"].samples_us
    fault = records["test.cudafault"]
    assert fault.status == "error" and fault.message.startswith("compile pre-pass: ")
    assert "illegal memory access" in fault.message
