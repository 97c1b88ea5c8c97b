"""The sweep's plan: which (case, impl) pairs run (grouped per case, so a case's workload is built
once), which skip and why, what ``--resume`` reuses, and which option left nothing to run."""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ssmbench.measure.runner import Task
from ssmbench.output.results import DONE_STATUSES, CaseRecord, case_params, record_key


def shard_of(case_id: str, n: int) -> int:
    """A stable shard for a case id (every impl of a case lands in the same shard, so the
    baseline and the impls it is compared with stay together)."""
    return int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "big") % n


def matches(sweep_name: str, case: Any, filters: dict[str, set[str]]) -> bool:
    if not filters:
        return True
    params = case_params(case)
    for key, wanted in filters.items():
        if key == "case":
            if not any(fnmatch.fnmatchcase(case.id, p) for p in wanted):
                return False
        elif key == "sweep":
            if sweep_name not in wanted:
                return False
        elif str(params[key]) not in wanted:
            return False
    return True


# -- the plan --------------------------------------------------------------------------------


@dataclass
class Plan:
    tasks: list[Task]
    skips: list[CaseRecord]
    order: list[tuple[str, str, str]]
    """Every planned (sweep, case id, impl), skips included, in spec order."""
    baselines: dict[str, str | None]
    pairs: int
    """(case, impl) pairs to measure."""
    reused: int = 0
    """Planned pairs an earlier run (``--resume``) already did, with these parameters."""
    stale: set[tuple[str, str, str]] = field(default_factory=set)
    """Planned pairs whose earlier record was measured with other parameters: measured again."""


def same_params(record: CaseRecord, case: Any) -> bool:
    """Whether an earlier record measured this very workload: its whole parameter dict (shape,
    acceptance law, seed, options...) equals the case's, compared as the log stores it (JSON)."""
    return record.params == json.loads(json.dumps(case_params(case)))


def make_plan(sweep_file: Any, impl_names: list[str], filters: dict[str, set[str]],
              shard: tuple[int, int] | None,
              done: Mapping[tuple[str, str, str], CaseRecord]) -> Plan:
    """Which pairs run (grouped per case, so a case's workload is built once), which skip and why.
    ``done``: an earlier run's records (``--resume``); one counts as done only when its status is
    final and its parameters are the case's."""
    from ssmbench.measure.stopping import StopRule
    from ssmbench.runs.planning import check_impl_names, impl_plan, select_impls
    from ssmbench.spec.expand import expand

    impls = check_impl_names(impl_names)
    plan = Plan([], [], [], {}, 0)
    task_ids = itertools.count()
    for sweep in sweep_file.sweeps:
        plan.baselines[sweep.name] = sweep.spec.baseline
        names = select_impls(sweep, impl_names, impls)
        measure = sweep.spec.measure.model_dump()
        StopRule.from_measure(measure)  # fails early on a settings mismatch
        for case in expand(sweep).cases:
            if shard is not None and shard_of(case.id, shard[1]) != shard[0]:
                continue
            if not matches(sweep.name, case, filters):
                continue
            to_run = []
            for name in names:
                key = record_key(sweep.name, case.id, name)
                plan.order.append(key)
                earlier = done.get(key)
                if earlier is not None and earlier.status in DONE_STATUSES:
                    if same_params(earlier, case):
                        plan.reused += 1
                        continue
                    plan.stale.add(key)
                reason = impl_plan(impls[name], case, sweep)
                if reason is not None:
                    plan.skips.append(CaseRecord(id=case.id, impl=name, sweep=sweep.name, status="skip",
                                                 message=reason, params=case_params(case)))
                else:
                    to_run.append(name)
            if to_run:
                plan.tasks.append(Task(next(task_ids), sweep.name, case, to_run, measure))
                plan.pairs += len(to_run)
    return plan


def why_empty(sweep_file: Any, impl_names: list[str], filters: dict[str, set[str]],
              shard: tuple[int, int] | None) -> str:
    """Which option left no (case, impl) pair, naming the values the spec does have."""
    from ssmbench.spec.expand import expand

    everything = [(sweep, case) for sweep in sweep_file.sweeps for case in expand(sweep).cases]
    if not everything:
        return f"{sweep_file.path}: the spec expands to no case"
    families = {sweep.family for sweep in sweep_file.sweeps}
    if impl_names:
        from ssmbench.impls.registry import registry

        impls = registry()
        runnable = [n for n in impl_names if any(n in s.spec.impls or impls[n].family == s.family
                                                 for s in sweep_file.sweeps)]
        if not runnable:
            return (f"--impl {', '.join(impl_names)}: no sweep of {sweep_file.path} runs it "
                    f"(its families: {', '.join(sorted(families))})")
    for key, wanted in filters.items():
        if key == "case":
            if not any(fnmatch.fnmatchcase(c.id, p) for _, c in everything for p in wanted):
                return f"--filter case={','.join(sorted(wanted))}: matches no case id (`ssmbench plan SPEC` lists them)"
            continue
        have = sorted({s.name if key == "sweep" else str(case_params(c)[key]) for s, c in everything})
        if not wanted & set(have):
            return f"--filter {key}={','.join(sorted(wanted))}: no case has it; {key} values here: {', '.join(have)}"
    selected = [c for s, c in everything if matches(s.name, c, filters)]
    if not selected:
        return "--filter: no case matches all the filters together"
    if shard is not None:
        return f"--shard {shard[0]}/{shard[1]}: none of the {len(selected)} selected case(s) falls in this shard"
    return "no (case, impl) pair matched the spec, --impl, --filter and --shard"
