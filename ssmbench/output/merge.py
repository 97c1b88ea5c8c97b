"""Several results files of one sweep made into one: the shards of ``sweep --shard i/n`` run as
separate invocations (on separate machines or GPUs), or runs split with ``--filter``.

Merging is refused (UsageError, exit 2) where the result would not be one honest run: files of
different specs or commits, or a (sweep, case, impl) pair measured in two files with different
results. The same pair with equal records (a skip written by two runs) is kept once. Each GPU's
calibration is kept (``env.gpus`` is the union), and ``env.merged_from`` says which file gave
what, so nothing about where a number came from is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssmbench.errors import UsageError
from ssmbench.output.results import CaseRecord, LogContents

AGREED_ENV_KEYS: tuple[str, ...] = ("spec_name", "git_sha", "device_mode")
"""What every merged file must agree on: the same sweep spec, code and device mode."""


@dataclass
class Merged:
    env: dict[str, Any]
    devices: list[dict[str, Any]]
    records: list[CaseRecord]
    notes: list[str]
    """What the user should know: shards missing, unfinished inputs, duplicates dropped."""


def parse_shard_text(text: Any) -> tuple[int, int] | None:
    """``"1/4"`` -> (1, 4); None for anything else (a run without --shard records null)."""
    if not isinstance(text, str) or text.count("/") != 1:
        return None
    i, _, n = text.partition("/")
    if not (i.strip().isdigit() and n.strip().isdigit()):
        return None
    return int(i), int(n)


def shard_notes(shards: list[tuple[int, int] | None]) -> tuple[list[str], bool]:
    """What the inputs' ``env.shard`` values say: notes, and whether every shard of one split
    is present (no input sharded: True)."""
    given = [s for s in shards if s is not None]
    if not given:
        return [], True
    counts = {n for _, n in given}
    if len(counts) > 1 or len(given) != len(shards):
        split = ", ".join("none" if s is None else f"{s[0]}/{s[1]}" for s in shards)
        return [f"the inputs were split differently (shards: {split}); coverage of the sweep is not checked"], False
    n = counts.pop()
    missing = sorted(set(range(n)) - {i for i, _ in given})
    if missing:
        return [f"shard(s) {', '.join(f'{i}/{n}' for i in missing)} not among the inputs: the merged run is "
                "incomplete (complete: false)"], False
    return [], True


def merge_results(inputs: list[tuple[Path, LogContents]]) -> Merged:
    """One run from several results files of the same spec and commit (see the module docstring)."""
    if not inputs:
        raise UsageError("merge: no input files")
    first_path, first = inputs[0]
    for path, contents in inputs[1:]:
        for key in AGREED_ENV_KEYS:
            if contents.env.get(key) != first.env.get(key):
                raise UsageError(f"{path}: env.{key} is {contents.env.get(key)!r}, {first_path} has "
                                 f"{first.env.get(key)!r}; merge joins parts of one sweep run of one commit")
    records: dict[tuple[str, str, str], CaseRecord] = {}
    origin: dict[tuple[str, str, str], Path] = {}
    devices: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    duplicates = 0
    for path, contents in inputs:
        for key, record in contents.records.items():
            if key in records:
                if records[key].to_dict() != record.to_dict():
                    raise UsageError(f"{path}: the pair {'/'.join(key)} is also in {origin[key]} with other "
                                     "results; merge joins disjoint parts (shards), it does not pick between "
                                     "two measurements")
                duplicates += 1
                continue
            records[key] = record
            origin[key] = path
        for dkey, device in contents.devices.items():
            devices.setdefault(dkey, device)
    if duplicates:
        notes.append(f"{duplicates} pair(s) given identically in two inputs, kept once")
    shard_list = [parse_shard_text(c.env.get("shard")) for _, c in inputs]
    more, covered = shard_notes(shard_list)
    notes += more
    unfinished = [str(p) for p, c in inputs if c.env.get("complete") is not True]
    if unfinished:
        notes.append(f"unfinished input(s) ({', '.join(unfinished)}): complete: false")
    env = dict(first.env)
    env.pop("gpus", None)
    started = [c.env["started"] for _, c in inputs if isinstance(c.env.get("started"), str)]
    finished = [c.env["finished"] for _, c in inputs if isinstance(c.env.get("finished"), str)]
    env.update({
        "started": min(started) if started else None,
        "finished": max(finished) if finished else None,
        "complete": covered and not unfinished,
        "shard": None,
        "git_dirty": any(bool(c.env.get("git_dirty")) for _, c in inputs),
        "merged_from": [{"path": str(p), "shard": c.env.get("shard"), "hostname": c.env.get("hostname"),
                         "started": c.env.get("started"), "finished": c.env.get("finished"),
                         "complete": c.env.get("complete"), "pairs": len(c.records),
                         "gpus": sorted(c.devices)} for p, c in inputs],
    })
    hosts = sorted({str(c.env.get("hostname")) for _, c in inputs if c.env.get("hostname")})
    if len(hosts) > 1:
        env["hostname"] = hosts[0]
        notes.append(f"measured on {len(hosts)} hosts ({', '.join(hosts)}); env.merged_from says which pair where")
    return Merged(env, list(devices.values()), list(records.values()), notes)
