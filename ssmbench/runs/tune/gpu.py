"""The tuner's real `Measurer`: one case of one impl on the timing process's device, each knob
config built under `ssmbench.impls.knobs.forced`, verified (`ssmbench.measure.target`), captured
in a CUDA graph and made ready (restore, L2 mode) before any round; a round is one call of the
session's timer (`ssmbench.measure.runner.Session`: CUPTI spans), so capture and instantiation
never fall inside the timed loop. A duel's challengers are compiled first in parallel
(`ssmbench.runs.prewarm`), in processes the tune keeps from duel to duel (`CompilePool`); one that
fails or errors there is discarded with that message and never run in the tuner's process. A CUDA
fault in the tuner's process raises `Fault` naming the config being prepared or measured."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ssmbench.impls.knobs import Config, forced
from ssmbench.measure.runner import Session, classify_error
from ssmbench.measure.target import Target, describe_exception
from ssmbench.runs.prewarm import CompilePool, Job, Prewarm, prewarm
from ssmbench.runs.sweep.compile import PREFIX
from ssmbench.runs.tune.search import Fault, config_key

WARMUP = 3


class TargetMeasurer:
    def __init__(self, session: Session, case: Any, impl: Any, samples: int, compile_workers: int,
                 plugins: list[str], compile_deadline_s: float = 1200.0, pool: CompilePool | None = None) -> None:
        from ssmbench.families import make_workload

        self.session, self.case, self.impl, self.samples = session, case, impl, samples
        self.compile_workers, self.plugins, self.compile_deadline_s = compile_workers, plugins, compile_deadline_s
        self.pool = pool
        """The tune's compile processes, kept across duels and groups (None: one pool per duel)."""
        self.workload = make_workload(case, session.device)
        self.ready: dict[str, tuple[Target, Callable[[], None], Callable[[], None]]] = {}
        """`config_key` -> (the target, its graph's replay, prepare). The target holds the chain's
        buffers: a CUDA graph keeps only their addresses, and each capture empties the allocator's
        cache (`torch.cuda.graph`), so a graph whose target was dropped replays into freed memory
        (pool, y, dst indices reused or released: the likely cause of the H200 tune's illegal memory
        access, fp8 SR b64)."""

    def verify(self, configs: Sequence[Config]) -> list[str | None]:
        self._release()  # the last duel's targets; an incumbent is rebuilt on its next round
        failed: dict[str, str] = {}
        if self.compile_workers and len(configs) > 1:
            jobs = [Job("tune", self.case, self.impl.name, dict(c)) for c in configs]
            failed = prepass_problems(prewarm(jobs, self.compile_workers, [str(self.session.device)], self.plugins,
                                              self.compile_deadline_s, pool=self.pool))
        answers: list[str | None] = []
        for config in configs:
            problem = failed.get(config_key(config))
            if problem is None:
                try:
                    problem = self._prepare(config)
                except Fault as fault:
                    raise Fault(config, fault.problem, answers) from fault
            answers.append(problem)
        return answers

    def _prepare(self, config: Config) -> str | None:
        """Build, verify, capture and warm one config. Out of memory with other configs held (a
        duel holds all its configs at once; at the largest batches they need not fit together, e.g.
        eight GDN b512 fp32 targets of ~9 GB each plus the fp64 reference): those are released and
        this one is tried once more; they are rebuilt when their round comes (`sample`), outside the
        timed loop as before. Out of memory on its own is this config's problem."""
        problem, oom = self._try_prepare(config)
        if oom and self.ready:
            self._release()
            problem, oom = self._try_prepare(config)
        return problem

    def _release(self) -> None:
        """Drop every held target (and its graph) and give their memory back (`Session.free_memory`)."""
        self.ready.clear()
        self.session.free_memory()

    def _try_prepare(self, config: Config) -> tuple[str | None, bool]:
        """`_prepare`'s one attempt: (the problem or None, whether it ran out of memory)."""
        session = self.session
        try:
            with forced(self.impl.name, config):
                target = Target(self.case, self.impl, self.workload, session.device)
                target.build()
            verdict = target.verify()
            if verdict.status != "ok":  # wrong results (a miscompile): this config's problem, not memory
                return verdict.message or "; ".join(c.describe() for c in verdict.comparisons if not c.ok), False
            target.restore()
            run, _, _ = session.capture(target.chain)
            prepare = target.ready(session.flusher)
            for _ in range(WARMUP):
                prepare()
                run()
            session.sync()
        except Exception as exc:  # noqa: BLE001 - a config that cannot build or run is discarded
            kind = classify_error(exc)
            if kind == "fatal":  # the CUDA context is gone: the journal logs it, the tune stops
                raise Fault(config, fault_problem(exc)) from exc
            return describe_exception(exc), kind == "oom"
        self.ready[config_key(config)] = (target, run, prepare)
        return None, False

    def sample(self, config: Config) -> list[float]:
        key = config_key(config)
        if key not in self.ready and (problem := self._prepare(config)) is not None:
            raise RuntimeError(f"{config} passed verification earlier but now: {problem}")
        _, run, prepare = self.ready[key]
        try:
            return [s.span_us for s in self.session.timer.measure(run, prepare, self.samples)]
        except Exception as exc:
            if classify_error(exc) == "fatal":
                raise Fault(config, fault_problem(exc)) from exc
            raise


def fault_problem(exc: BaseException) -> str:
    """A fault's problem as the journal keeps it (the config is discarded on resume)."""
    return f"CUDA fault, the tune stopped here: {describe_exception(exc)}"


def prepass_problems(done: Prewarm) -> dict[str, str]:
    """Why each config failed or errored in the pre-pass's processes (`config_key` -> problem)."""
    problems = {}
    for outcome in done.outcomes:
        if outcome.status != "ok" and outcome.job.config is not None:
            problems[config_key(outcome.job.config)] = PREFIX + outcome.problem
    return problems
