"""The worker session, in-process on the CPU: spec -> workload, the correctness gate before timing,
restore + L2 before each sample, records per impl, and how errors are classified."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ssmbench.families import make_workload
from ssmbench.families.common import POOL_FACTOR
from ssmbench.impls.base import Chain, snapshot
from ssmbench.impls.reference import IntermediateReference, SequentialReference
from ssmbench.measure.l2 import in_proj_outputs
from ssmbench.measure.runner import (
    Session,
    Task,
    WorkerConfig,
    classify_error,
    verify_summary,
)
from ssmbench.measure.target import describe_exception
from ssmbench.measure.verify import Comparison
from ssmbench.spec.expand import expand
from ssmbench.spec.load import load_sweep_file

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"
MEASURE = {"warmup": 2, "min_samples": 5, "max_samples": 8, "max_noise": 0.5, "min_time_s": 0.0,
           "timeout_s": 10.0}


def smoke_case(pattern: str, part: int = 0):
    sweep = load_sweep_file(SWEEPS / "smoke.yaml").sweeps[part]
    return next(c for c in expand(sweep).cases if pattern in c.id)


# -- spec -> workload --------------------------------------------------------------------------


def test_headline_spec_builds_production_workloads() -> None:
    sweep = load_sweep_file(SWEEPS / "nemotron3-super-tp8.yaml").sweeps[0]
    case = next(c for c in expand(sweep).cases if c.batch == 2 and c.state_dtype == "int8")
    wl = make_workload(case, "cpu")
    s = wl.shape
    assert (s.nheads, s.head_dim, s.dstate, s.ngroups) == (16, 64, 128, 1)  # TP8 slice
    assert wl.xbc.shape == (2 * 6, 16 * 64 + 2 * 128) and wl.xbc.dtype == torch.bfloat16
    assert wl.xbc.is_contiguous() and not wl.conv_input().is_contiguous()  # (b, conv_dim, T) view
    assert wl.n_slots == POOL_FACTOR * 2 and len(set(wl.slot_idx.tolist())) == 2
    assert wl.start_state.shape == (2, 16, 64, 128) and wl.start_state.abs().min() >= 0
    assert (wl.A < 0).all() and not (wl.xbc == 0).all()
    dt = torch.nn.functional.softplus(wl.dt_bias.double())
    assert ((dt >= 1e-3 * 0.999) & (dt <= 1e-1 * 1.001)).all()
    again = make_workload(case, "cpu")  # seeded by (seed, case id): reproducible
    assert torch.equal(again.xbc, wl.xbc) and torch.equal(again.pnat, wl.pnat)
    assert [t.data_ptr() for t in in_proj_outputs(wl)] == [wl.xbc.data_ptr(), wl.dt_raw.data_ptr()]


def test_work_digest_keys_the_work_not_the_values() -> None:
    """Same case, same digest (drawn twice); another seed or batch, another digest; a float buffer
    changed does not move it (the values are drawn where they live), an index does."""
    sweep = load_sweep_file(SWEEPS / "nemotron3-super-tp8.yaml").sweeps[0]
    cases = [c for c in expand(sweep).cases if c.state_dtype == "fp32" and c.window == 16]
    one, two = (next(c for c in cases if c.batch == b) for b in (2, 4))
    wl = make_workload(one, "cpu")
    digest = wl.work_digest()
    assert len(digest) == 12 and digest == make_workload(one, "cpu").work_digest()
    assert make_workload(two, "cpu").work_digest() != digest
    assert make_workload(dataclasses.replace(one, seed=one.seed + 1), "cpu").work_digest() != digest
    wl.start_state.add_(1.0)
    assert wl.work_digest() == digest
    wl.pnat[0] += 1
    assert wl.work_digest() != digest


def test_gdn_spec_builds_workloads() -> None:
    sweep = next(s for s in load_sweep_file(SWEEPS / "qwen35-gdn.yaml").sweeps if s.name == "qwen35-gdn-t4-inter")
    case = next(c for c in expand(sweep).cases if c.batch == 1)
    wl = make_workload(case, "cpu")
    assert wl.qkv.shape == (case.T, 2 * 16 * 128 + 64 * 128)
    assert wl.start_state.shape == (1, 64, 128, 128)
    assert len(in_proj_outputs(wl)) == 3


# -- the session -------------------------------------------------------------------------------


class Counting(SequentialReference):
    """A reference chain with a restore that counts calls (and real buffers it puts back)."""

    name = "test.counting"

    def __init__(self) -> None:
        self.restores = 0
        self.runs = 0

    def build(self, case, workload) -> Chain:
        chain = super().build(case, workload)
        put_back = snapshot(workload.conv_state, None)

        def restore() -> None:
            self.restores += 1
            put_back()

        def run() -> None:
            self.runs += 1
            chain()

        return Chain([run], chain.kernel_names, chain.outputs, restore=restore)

    def bytes_moved(self, case, workload=None) -> int:
        return 1000


class Wrong(IntermediateReference):
    name = "test.wrong"

    def build(self, case, workload) -> Chain:
        chain = super().build(case, workload)

        def outputs():
            out = dict(chain.outputs())
            out["y"] = out["y"] * 1.1
            return out

        return Chain(chain.launches, chain.kernel_names, outputs)


class Raising(SequentialReference):
    def __init__(self, name: str, message: str) -> None:
        self.name, self.message = name, message

    def build(self, case, workload) -> Chain:
        raise RuntimeError(self.message)


@pytest.fixture
def session(monkeypatch):
    planted = (Raising("test.raise", "planted bug"),
               Raising("test.fault", "CUDA error: an illegal memory access was encountered"))
    impls = {i.name: i for i in (SequentialReference(), Counting(), Wrong(), *planted)}
    monkeypatch.setattr("ssmbench.impls.registry.registry", lambda: impls)
    s = Session(WorkerConfig(device="cpu"))
    s.impls = impls
    return s


def run_task(session, impl_names, case=None) -> tuple[bool, list[tuple]]:
    case = case or smoke_case("b3-T4-fp32-pool-w4")
    events: list[tuple] = []
    keep = session.run(Task(0, "smoke", case, impl_names, MEASURE), events.append)
    return keep, events


def results(events) -> dict:
    return {e[1]["impl"]: e[1] for e in events if e[0] == "result"}


def test_ok_record_carries_samples_stats_and_verification(session) -> None:
    keep, events = run_task(session, ["reference.sequential"])
    assert keep
    phases = [e[2] for e in events if e[0] == "phase"]
    assert phases == ["workload", "build", "verify", "capture", "time"]
    rec = results(events)["reference.sequential"]
    assert rec["status"] == "ok" and rec["timer"] == "wall-cpu" and rec["launch"] == "eager"
    assert 5 <= rec["n_samples"] == len(rec["samples_us"]) <= 8
    assert rec["p10_us"] <= rec["median_us"] <= rec["p90_us"]
    assert rec["stop"] in ("converged", "max_samples")
    assert rec["params"]["batch"] == 3 and rec["params"]["format"] == "fp32" and rec["params"]["window"] == 4
    assert rec["verify"]["worst_ratio"] < 1 and {c["name"] for c in rec["verify"]["comparisons"]} >= {"y"}
    assert rec["bytes"] is None and rec["sol_pct"] is None  # the references declare no byte model
    assert rec["seconds"] > 0
    assert rec["workload"] == make_workload(smoke_case("b3-T4-fp32-pool-w4"), "cpu").work_digest()


def test_restore_runs_before_every_sample_and_bytes_give_sol(session) -> None:
    impl = session.impls["test.counting"]
    session.info["bandwidth"] = {"measured_tbps": 2.0, "datasheet_tbps": 4.0}
    _, events = run_task(session, ["test.counting"])
    rec = results(events)["test.counting"]
    assert rec["status"] == "ok"
    warmup, n = MEASURE["warmup"], rec["n_samples"]
    assert impl.runs == 1 + warmup + n  # gate, warm-up, samples (CPU: no capture run)
    assert impl.restores == 1 + warmup + n  # once before capture, then before every run
    assert rec["bytes"] == 1000
    assert rec["tbps"] == pytest.approx(1000 / (rec["median_us"] * 1e-6) / 1e12)
    assert rec["sol_pct"] == pytest.approx(100 * rec["tbps"] / 2.0)
    assert rec["sol_datasheet_pct"] == pytest.approx(100 * rec["tbps"] / 4.0)


def test_failing_impl_is_recorded_fail_and_not_timed(session) -> None:
    keep, events = run_task(session, ["test.wrong", "reference.sequential"])
    recs = results(events)
    assert keep
    assert recs["test.wrong"]["status"] == "fail" and "y:" in recs["test.wrong"]["message"]
    assert recs["test.wrong"]["samples_us"] == [] and recs["test.wrong"]["median_us"] is None
    assert "time" not in [e[2] for e in events if e[0] == "phase" and e[1] == "test.wrong"]
    assert recs["reference.sequential"]["status"] == "ok"


def test_an_exception_is_an_error_and_the_session_goes_on(session) -> None:
    keep, events = run_task(session, ["test.raise", "reference.sequential"])
    recs = results(events)
    assert keep
    assert recs["test.raise"]["status"] == "error" and "planted bug" in recs["test.raise"]["message"]
    assert recs["reference.sequential"]["status"] == "ok"


def test_a_cuda_fault_ends_the_session_after_recording(session) -> None:
    keep, events = run_task(session, ["test.fault", "reference.sequential"])
    recs = results(events)
    assert not keep  # the worker must exit: its CUDA context is gone
    assert recs["test.fault"]["status"] == "error"
    assert "illegal memory access" in recs["test.fault"]["message"]
    assert "reference.sequential" not in recs  # left for a fresh worker


def test_error_classification() -> None:
    assert classify_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")) == "oom"
    assert classify_error(RuntimeError("CUDA error: an illegal memory access was encountered")) == "fatal"
    assert classify_error(RuntimeError("CUDA error: device-side assert triggered")) == "fatal"
    assert classify_error(RuntimeError("out of resource: shared memory, Required: 300000")) == "error"
    assert classify_error(ValueError("duplicate slots")) == "error"


def test_describe_exception_names_type_message_and_place() -> None:
    try:
        raise ValueError("first line\nsecond line")
    except ValueError as exc:
        text = describe_exception(exc)
    assert text.startswith("ValueError: first line (test_measure_runner.py:")


def test_verify_summary() -> None:
    summary = verify_summary([Comparison("y", 0.01, 0.02), Comparison("conv_state", 0.0, 0.0),
                              Comparison("state[fp8]", float("inf"), 0.14)])
    assert summary["worst_ratio"] == float("inf") and summary["max_error"] == float("inf")
    assert [c["ok"] for c in summary["comparisons"]] == [True, True, False]


def test_cleanup_collects_per_case_not_per_pair(monkeypatch) -> None:
    """A full garbage collection costs ~0.1 s in a worker: after a pair it runs only when device
    memory is held (never on the CPU), after a case always."""
    import ssmbench.measure.runner as runner

    calls: list[int] = []
    monkeypatch.setattr(runner.gc, "collect", lambda *a: calls.append(1) or 0)
    session = runner.Session(runner.WorkerConfig(device="cpu"))
    session.free_memory(pair=True)
    assert calls == []
    session.free_memory()
    assert calls == [1]
