"""`sweep --gpus`: which GPU measures which case (issue 23). Case c runs on GPU
``shard_of(c.id, n)``, the rule of ``--shard i/n``, so two runs on one multi-GPU machine (and a
``--gpus`` run against its ``--shard`` runs) measure each pair on the same device; a GPU whose
worker cannot start hands its cases to the others."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from ssmbench.measure.runner import Task, WorkerConfig
from ssmbench.runs.sweep.plan import make_plan, shard_of
from ssmbench.runs.sweep.pool import WorkerPool
from ssmbench.spec.load import load_sweep_file

HEADLINE = Path(__file__).resolve().parents[1] / "sweeps" / "nemotron3-super-tp8.yaml"


def pool(n: int) -> WorkerPool:
    configs = [WorkerConfig(device="cpu", gpu_index=i) for i in range(n)]
    return WorkerPool(configs, Path("/nonexistent"), lambda d: None, lambda r: None, lambda *a: None)


def tasks() -> list[Task]:
    plan = make_plan(load_sweep_file(HEADLINE), [], {}, None, {})
    return plan.tasks


def drain(p: WorkerPool, queue: deque[Task]) -> dict[int, list[str]]:
    """Hand out the queue the way the loop does when every slot is ready in turn."""
    got: dict[int, list[str]] = {s.number: [] for s in p.slots}
    while queue:
        moved = False
        for slot in p.slots:
            if slot.disabled:  # no worker: never ready, takes nothing
                continue
            task = p._next_task(slot, queue)
            if task is not None:
                got[slot.number].append(task.case.id)
                moved = True
        assert moved, "a task no slot will take"
    return got


def test_each_case_runs_on_the_gpu_of_its_shard() -> None:
    all_tasks = tasks()
    for n in (2, 3, 8):
        got = drain(pool(n), deque(all_tasks))
        assert sum(len(v) for v in got.values()) == len(all_tasks)
        for gpu, ids in got.items():
            assert all(shard_of(i, n) == gpu for i in ids)
    # the same as the shards: --gpus 0,1 measures exactly the cases of --shard 0/2 on GPU 0
    shard0 = make_plan(load_sweep_file(HEADLINE), [], {}, (0, 2), {})
    assert sorted(drain(pool(2), deque(all_tasks))[0]) == sorted(t.case.id for t in shard0.tasks)


def test_a_gpu_without_a_worker_hands_its_cases_on() -> None:
    p = pool(2)
    p.slots[1].disabled = True
    got = drain(p, deque(tasks()))
    assert got[1] == [] and len(got[0]) == len(tasks())


def test_one_gpu_takes_everything_in_plan_order() -> None:
    all_tasks = tasks()
    assert drain(pool(1), deque(all_tasks))[0] == [t.case.id for t in all_tasks]


def test_compare_breaks_changes_down_by_gpu(tmp_path) -> None:
    """A run whose pairs sit on two GPUs, one of them 5% slower: compare's by-GPU lines name the
    slow device and put every SLOWER pair on it (the verdicts themselves are unchanged)."""
    from ssmbench.output.compare import compare_results
    from ssmbench.output.results import load_results

    baseline = Path(__file__).resolve().parents[1] / "baselines" / "nvidia-h200" / "smoke.json"
    old = load_results(baseline)
    new = load_results(baseline)
    for record in new.records.values():
        if record.status != "ok":
            continue
        if shard_of(record.id, 2) == 1:
            record.gpu = "GPU-slow"
            record.samples_us = [x * 1.05 for x in record.samples_us]
    comparison = compare_results(new, old)
    lines = comparison.by_device
    assert len(lines) == 2
    slow = next(line for line in lines if "GPU-slow" in line)
    assert "+5.0%" in slow
    assert f"{comparison.counts['SLOWER']} slower" in slow and comparison.counts["SLOWER"] > 0
    assert compare_results(old, load_results(baseline)).by_device == []
