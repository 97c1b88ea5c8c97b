"""The tuner survives a bad config: one that errors in the compile pre-pass's processes is
discarded with that message and never run in the tuner's process; one that faults the tuner's
process (a CUDA error: it can run nothing more) is logged as discarded before the tune stops
(exit 1, "--resume"), and the resumed tune goes on without it and completes. On the search's fake
cost surface (test_tune_search) and end to end through the CLI with a fake impl (test_tune_cli).
And the measurer keeps a verified config's buffers as long as its (graph-like) capture."""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_tune_cli import spec  # noqa: F401 (a fixture)
from test_tune_search import DEFAULT, GATE, SETTINGS, SPACE, Fake, bowl
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.impls.base import Chain, register
from ssmbench.impls.knobs import Config, Knob, KnobSpace
from ssmbench.impls.reference import SequentialReference
from ssmbench.impls.registry import PLUGINS_ENV, registry
from ssmbench.impls.tuned import Tunable
from ssmbench.output.results import log_path
from ssmbench.runs.tune.gpu import TargetMeasurer
from ssmbench.runs.tune.journal import Journal
from ssmbench.runs.tune.search import Fault, descend
from ssmbench.spec.expand import expand
from ssmbench.spec.load import load_sweep_file

PLANTED = "CUDA fault, the tune stopped here: AcceleratorError: CUDA error: an illegal memory access (planted)"
CULPRIT: Config = {"block": 32, "warps": 1, "fused": True, "grid": 2}
"""The first pass's winner on `bowl`: without it the search must find another optimum."""


class Faulting(Fake):
    """`Fake`, but ``culprit`` raises `Fault` when verified (``when="verify"``) or sampled."""

    def __init__(self, *args, culprit: Config, when: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.culprit, self.when = culprit, when

    def verify(self, configs):
        answers: list[str | None] = []
        for config in configs:
            if self.when == "verify" and config == self.culprit:
                raise Fault(config, PLANTED, answers)
            answers += super().verify([config])
        return answers

    def sample(self, config):
        if self.when == "sample" and config == self.culprit:
            raise Fault(config, PLANTED)
        return super().sample(config)


class NeverRuns(Fake):
    """`Fake` for a resumed tune: running ``culprit`` again is the bug under test."""

    def __init__(self, *args, culprit: Config, **kwargs) -> None:
        super().__init__(*args, seed=99, **kwargs)
        self.culprit = culprit

    def verify(self, configs):
        assert self.culprit not in configs, "a faulted config was verified again"
        return super().verify(configs)

    def sample(self, config):
        assert config != self.culprit, "a faulted config was measured again"
        return super().sample(config)


def fault_then_resume(log: Path, culprit: Config, when: str):
    """A tune stopped by ``culprit``'s fault, then resumed from its log: (result, lines of the log)."""
    journal = Journal(log, SETTINGS, resume=False)
    with pytest.raises(Fault):
        descend(SPACE, DEFAULT, journal.replaying("g", lambda: Faulting(bowl, culprit=culprit, when=when)), GATE,
                rounds=2)
    journal.close()
    journal = Journal(log, SETTINGS, resume=True)
    replay = journal.replaying("g", lambda: NeverRuns(bowl, culprit=culprit))
    result = descend(SPACE, DEFAULT, replay, GATE, rounds=2)
    journal.close()
    assert replay.replayed > 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    seqs = [(x["group"], x["seq"]) for x in lines if x["type"] in ("verify", "round", "discard")]
    assert len(seqs) == len(set(seqs))  # nothing measured twice
    return result, lines


@pytest.mark.parametrize("when", ["verify", "sample"])
def test_a_config_that_faults_is_logged_and_the_resumed_tune_goes_on_without_it(tmp_path: Path, when: str) -> None:
    without = descend(SPACE, DEFAULT, Fake(bowl, broken=[CULPRIT]), GATE, rounds=2)
    result, lines = fault_then_resume(tmp_path / "tune.jsonl", CULPRIT, when)
    assert (CULPRIT, PLANTED) in result.discarded
    assert result.stopped == "converged"
    assert result.best == without.best != DEFAULT and result.best["fused"]  # the best remaining
    logged = [x for x in lines if x.get("config") == CULPRIT and x.get("problem") == PLANTED]
    assert [x["type"] for x in logged] == ["verify" if when == "verify" else "discard"]


def test_a_default_that_faults_ends_its_group_with_the_default(tmp_path: Path) -> None:
    result, _ = fault_then_resume(tmp_path / "tune.jsonl", DEFAULT, "sample")
    assert result.stopped == "fault" and result.best == DEFAULT
    assert (DEFAULT, PLANTED) in result.discarded


# -- end to end: the CLI, a fake impl, the pre-pass in real processes -----------------------------


@dataclass(frozen=True)
class Mode:
    mode: str = "slow"


BUILT_FAULTY: list[str] = []
"""Every build of ``mode=fault`` in this (the tuner's) process."""


class FaultyReference(SequentialReference):
    """The sequential reference; ``mode``: ``slow`` (the default: sleeps 2 ms a run), ``fast``,
    ``prepass_error`` (errors, naming the process), ``prepass_fault`` (a planted CUDA fault
    wherever it runs: the pre-pass reports it), ``fault`` (a planted CUDA fault in the tuner's
    process only, as the H200 tune's graph replay into freed memory: the pre-pass saw nothing) and
    ``wrong`` (runs, but its outputs are off: the H200 tune of W = 16 bf16 b512 met one, a
    miscompiled pipelined tile, and stopped on it with an internal error in session 16)."""

    name = "test.faulty"
    MODES = ("slow", "prepass_error", "prepass_fault", "fault", "wrong", "fast")
    tunable = Tunable(name, KnobSpace((Knob("mode", MODES, "what it does"),)), Path("/nonexistent"),
                      lambda case: Mode())

    def build(self, case, workload) -> Chain:
        mode = self.tunable.knobs(case, workload.start_state.device).mode
        in_prepass = mp.parent_process() is not None
        if mode == "prepass_error":
            raise ValueError(f"planted: fails in {'a pre-pass process' if in_prepass else 'the tuner process'}")
        if mode == "prepass_fault" or (mode == "fault" and not in_prepass):
            if not in_prepass:
                BUILT_FAULTY.append(mode)
            raise RuntimeError("CUDA error: an illegal memory access was encountered (planted)")
        chain = super().build(case, workload)
        if mode == "wrong":
            right = chain.outputs
            chain.outputs = lambda: {name: value + 1 if name == "y" else value for name, value in right().items()}
        if mode == "slow":
            step = chain.launches[0]
            chain.launches[0] = lambda: (time.sleep(0.002), step())
        return chain


if "test.faulty" not in registry():
    register(FaultyReference())


def test_tune_discards_prepass_errors_and_resumes_past_a_fault(spec: Path, tmp_path: Path,  # noqa: F811
                                                               monkeypatch) -> None:
    monkeypatch.setenv(PLUGINS_ENV, __name__)  # the pre-pass processes import this module too
    BUILT_FAULTY.clear()
    out = tmp_path / "knobs.json"
    args = ["tune", str(spec), "--impl", "test.faulty", "-o", str(out), "--batch", "1", "--rounds", "2",
            "--samples", "8", "--compile-workers", "2"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output
    assert "mode=fault: CUDA fault, the tune stopped here: RuntimeError: CUDA error" in first.output
    assert "--resume" in first.output and not out.exists()
    assert BUILT_FAULTY == ["fault"]
    verified = {x["config"]["mode"]: x for x in map(json.loads, log_path(out).read_text().splitlines())
                if x["type"] == "verify"}
    assert verified["prepass_error"]["problem"].startswith(
        "compile pre-pass: ValueError: planted: fails in a pre-pass process")
    assert verified["prepass_fault"]["problem"].startswith(
        "compile pre-pass: RuntimeError: CUDA error: an illegal memory access")  # never built here
    assert verified["fault"]["fault"] is True

    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert BUILT_FAULTY == ["fault"]  # never run again
    assert "discarded mode=prepass_error: compile pre-pass: ValueError: planted: fails in a pre-pass" in again.output
    assert "discarded mode=prepass_fault: compile pre-pass: RuntimeError: CUDA error" in again.output
    assert "discarded mode=fault: CUDA fault, the tune stopped here" in again.output
    assert "discarded mode=wrong: " in again.output  # wrong outputs: discarded, the tune goes on
    assert "the tuner process" not in again.output
    [entry] = json.loads(out.read_text())["entries"]
    assert entry["knobs"] == {"mode": "fast"}  # the best remaining


# -- a prepared config's buffers live as long as its graph ----------------------------------------


class GraphLikeSession:
    """The session surface `TargetMeasurer` uses, on the CPU, but capturing as a CUDA graph does:
    the replay holds no reference to the chain (a graph keeps only its buffers' addresses), and
    replaying the graph of a chain already freed raises the fault a GPU would (an illegal memory
    access: its pool and index tensors were handed to other tensors, or back to the driver)."""

    device = torch.device("cpu")
    flusher = None

    def __init__(self) -> None:
        self.timer = self

    def capture(self, chain: Chain):
        alive = weakref.ref(chain)

        def replay() -> None:
            if alive() is None:
                raise RuntimeError("CUDA error: an illegal memory access was encountered (a freed chain replayed)")
            alive()()

        return replay, "graph", ""

    def sync(self) -> None:
        pass

    def free_memory(self, *, pair: bool = False) -> None:
        """`Session.free_memory` on the CPU: the collection (what frees the chains of released targets)."""
        del pair
        gc.collect()

    def measure(self, run, prepare, n: int) -> list[SimpleNamespace]:
        spans = []
        for _ in range(n):
            prepare()
            start = time.perf_counter()
            run()
            spans.append(SimpleNamespace(span_us=(time.perf_counter() - start) * 1e6))
        return spans


def test_a_verified_config_keeps_its_buffers_until_measured(spec: Path) -> None:  # noqa: F811
    """The H200 tune's fault: a config's graph was replayed after its chain (pool, y, dst) was
    freed at the end of its verification (`torch.cuda.graph` empties the cache at every capture)."""
    case = expand(load_sweep_file(spec).sweeps[0]).cases[0]
    measurer = TargetMeasurer(GraphLikeSession(), case, registry()["test.faulty"], samples=3, compile_workers=0,
                              plugins=[])
    fast, slow = {"mode": "fast"}, {"mode": "slow"}
    assert measurer.verify([fast, slow]) == [None, None]
    gc.collect()
    assert len(measurer.sample(fast)) == 3 and len(measurer.sample(slow)) == 3


class MemoryBoundSession(GraphLikeSession):
    """`GraphLikeSession` on a device that holds at most ``room`` captured chains: one more is the
    allocator's out-of-memory error (a duel's targets at the largest batches: the H200 tune of
    GDN T=1 fp32 b512, 2026-11-30)."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room, self.captured = room, []

    def capture(self, chain: Chain):
        if sum(ref() is not None for ref in self.captured) >= self.room:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB (simulated)")
        self.captured.append(weakref.ref(chain))
        return super().capture(chain)


def test_a_duel_that_does_not_fit_in_memory_releases_and_rebuilds(spec: Path) -> None:  # noqa: F811
    """Out of memory while other configs are held is no config's fault: they are released, the
    config is prepared alone, and each is rebuilt for its round. Alone out of memory, the config
    itself is discarded with the allocator's message."""
    case = expand(load_sweep_file(spec).sweeps[0]).cases[0]
    measurer = TargetMeasurer(MemoryBoundSession(room=1), case, registry()["test.faulty"], samples=3,
                              compile_workers=0, plugins=[])
    fast, slow = {"mode": "fast"}, {"mode": "slow"}
    assert measurer.verify([fast, slow]) == [None, None]
    for config in (fast, slow, fast):
        assert len(measurer.sample(config)) == 3
    full = TargetMeasurer(MemoryBoundSession(room=0), case, registry()["test.faulty"], samples=3,
                          compile_workers=0, plugins=[])
    [problem] = full.verify([fast])
    assert problem is not None and "out of memory" in problem.lower()


def test_a_config_with_wrong_outputs_is_discarded_with_the_mismatch(spec: Path) -> None:  # noqa: F811
    """Verification failing is the config's problem (a string for the journal), beside one that
    verifies; not an internal error of the tuner (session 16's H200 tune stopped on one)."""
    case = expand(load_sweep_file(spec).sweeps[0]).cases[0]
    measurer = TargetMeasurer(GraphLikeSession(), case, registry()["test.faulty"], samples=3, compile_workers=0,
                              plugins=[])
    wrong, fast = {"mode": "wrong"}, {"mode": "fast"}
    problem, ok = measurer.verify([wrong, fast])
    assert isinstance(problem, str) and "y" in problem and ok is None
    assert len(measurer.sample(fast)) == 3
