"""Stored baselines: results files kept in git as ``baselines/<gpu-slug>/<sweep-name>.json``,
the reference `ssmbench compare` gates against (schema ``ssmbench.results/1``, env kept).

A baseline must be a real, complete measurement: never the CPU test mode, never a run with the
test slowdown knob, never an ok record without usable samples; unless forced, never an
interrupted run or one with failed/errored pairs. A baseline may carry, per pair, the medians
of several runs of the same sweep on the same GPU model (`add_run_medians`): the states the
pair has been seen in, which `compare` lays its band around. Every file is read through the validating
readers of `ssmbench.output.results`, so bad input is a `UsageError` (exit 2) naming file and field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ssmbench import resources
from ssmbench.errors import UsageError
from ssmbench.output.results import LogContents, load_results, usable_samples, write_results
from ssmbench.output.stats import median

BASELINES_DIR = resources.BASELINES_DIR


def gpu_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3`` (`ssmbench.resources.gpu_slug`)."""
    slug = resources.gpu_slug(name)
    if not slug:
        raise UsageError(f"GPU name {name!r} gives an empty directory name")
    return slug


def results_gpu(results: LogContents, path: Path) -> str:
    """The one GPU model a results file was measured on."""
    names = sorted({str(d.get("name")) for d in results.devices.values() if d.get("name")})
    if len(names) != 1:
        what = ", ".join(names) if names else "none recorded (env.gpus is empty)"
        raise UsageError(f"{path}: a baseline needs results from one GPU model; found {what}")
    return names[0]


def results_sweep(results: LogContents, path: Path) -> str:
    name = results.env.get("spec_name")
    if not name:
        sweeps = sorted({r.sweep for r in results.records.values()})
        if len(sweeps) != 1:
            raise UsageError(f"{path}: env.spec_name is missing and the records name {len(sweeps)} sweeps")
        name = sweeps[0]
    if not re.fullmatch(r"[A-Za-z0-9._-]+", str(name)) or str(name).startswith("."):
        raise UsageError(f"{path}: sweep name {name!r} is not usable as a file name")
    return str(name)


def baseline_path(results: LogContents, path: Path, root: Path = BASELINES_DIR) -> Path:
    """Where the baseline for this results file lives: ``root/<gpu-slug>/<sweep-name>.json``."""
    return Path(root) / gpu_slug(results_gpu(results, path)) / f"{results_sweep(results, path)}.json"


def problems(results: LogContents, path: Path) -> tuple[list[str], list[str]]:
    """(never allowed, allowed with --force) reasons not to store these results as a baseline."""
    never, forceable = [], []
    if results.env.get("device_mode") == "cpu":
        never.append("measured in the CPU test mode (wall-clock times, not a GPU measurement)")
    if results.env.get("test_slowdown"):
        never.append(f"measured with the test slowdown knob (SSMBENCH_TEST_SLOWDOWN={results.env['test_slowdown']})")
    if not any(r.status == "ok" for r in results.records.values()):
        never.append("no pair was measured ok")
    empty = [r for r in results.records.values() if r.status == "ok" and not usable_samples(r.samples_us)]
    if empty:
        never.append(f"{len(empty)} ok record(s) without usable samples (e.g. {'/'.join(empty[0].key)}); an ok "
                     "record must carry its samples_us")
    if Path(path).suffix == ".jsonl":
        forceable.append("a JSON-lines log (the run never wrote its final JSON)")
    elif results.env.get("complete") is not True:
        forceable.append("the run was interrupted (env.complete is not true)")
    bad = [r for r in results.records.values() if r.status in ("fail", "error")]
    if bad:
        shown = "; ".join(f"{r.impl} {r.id}: {r.status}" for r in bad[:3])
        forceable.append(f"{len(bad)} pair(s) failed or errored ({shown}{'; ...' if len(bad) > 3 else ''})")
    return never, forceable


def _storable(path: Path, force: bool) -> LogContents:
    """A results file that may be stored as (part of) a baseline, else a UsageError saying why."""
    results = load_results(path)
    never, forceable = problems(results, path)
    if never:
        raise UsageError(f"{path}: not stored as a baseline: " + "; ".join(never))
    if forceable and not force:
        raise UsageError(f"{path}: not stored as a baseline: " + "; ".join(forceable) + " (--force stores it anyway)")
    return results


def add_run_medians(results: LogContents, path: Path, more: Sequence[Path], force: bool) -> None:
    """Give every ok pair of ``results`` its median in each run (its own first, then each of
    ``more`` where the pair was measured ok there): the states `compare` lays its band around.
    The runs must be of the same sweep on the same GPU model and time the same work (equal
    workload digests where both records carry one); ``env.baseline_runs`` lists them
    (`run_provenance`)."""
    gpu, sweep = results_gpu(results, path), results_sweep(results, path)
    others = []
    for other_path in more:
        other = _storable(Path(other_path), force)
        if results_gpu(other, other_path) != gpu or results_sweep(other, other_path) != sweep:
            raise UsageError(f"{other_path}: sweep {results_sweep(other, other_path)!r} on "
                             f"{results_gpu(other, other_path)!r}; the baseline is sweep {sweep!r} on {gpu!r}: "
                             "every run of one baseline must be of the same sweep and GPU model")
        others.append(other)
    for key, record in results.records.items():
        if record.status != "ok" or not usable_samples(record.samples_us):
            continue
        medians = [median(record.samples_us)]
        for other, other_path in zip(others, more, strict=True):
            twin = other.records.get(key)
            if twin is not None and twin.status == "ok" and usable_samples(twin.samples_us):
                if record.workload and twin.workload and twin.workload != record.workload:
                    raise UsageError(f"{other_path}: {record.impl} {record.id} was measured on other "
                                     f"workload draws (digest {twin.workload}, {path}: {record.workload}): every run "
                                     "of one baseline must time the same work")
                medians.append(median(twin.samples_us))
        record.run_medians_us = medians if len(medians) > 1 else []
    results.env["baseline_runs"] = [run_provenance(r, p) for r, p in ((results, path), *zip(others, more, strict=True))]


def run_provenance(results: LogContents, path: Path) -> dict[str, object]:
    """What identifies one run of a several-run baseline: its file name, code, start and GPUs."""
    return {"file": Path(path).name, "git_sha": results.env.get("git_sha"), "started": results.env.get("started"),
            "gpus": sorted(str(d.get("uuid")) for d in results.devices.values())}


def save_baseline(results_path: Path, root: Path = BASELINES_DIR, force: bool = False,
                  more: Sequence[Path] = ()) -> tuple[Path, bool]:
    """Copy a results file to its baseline place, with the run medians of ``more`` runs of the
    same sweep (`add_run_medians`). Returns (path, whether it replaced one)."""
    results_path = Path(results_path)
    results = _storable(results_path, force)
    if more:
        add_run_medians(results, results_path, more, force)
    target = baseline_path(results, results_path, root)
    replaced = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_results(target, results.env, list(results.devices.values()), list(results.records.values()))
    except OSError as exc:
        raise UsageError(f"{target}: cannot write the baseline ({exc.strerror or exc})") from None
    return target, replaced


@dataclass
class StoredBaseline:
    path: Path
    gpu: str
    sweep: str
    ok: int
    cases: int
    date: str
    git_sha: str
    note: str = ""


def list_baselines(root: Path = BASELINES_DIR) -> list[StoredBaseline]:
    """Every ``root/*/*.json``; an unreadable one is listed with the reason, not raised (one bad
    file must not hide the others)."""
    found = []
    for path in sorted(Path(root).glob("*/*.json")):
        try:
            results = load_results(path)
        except (UsageError, OSError) as exc:  # the readers turn everything else into UsageError
            reason = str(exc).removeprefix(f"{path}: ").splitlines()[0] if str(exc) else type(exc).__name__
            found.append(StoredBaseline(path, path.parent.name, path.stem, 0, 0, "", "", f"unreadable: {reason}"))
            continue
        names = sorted({str(d.get("name")) for d in results.devices.values() if d.get("name")})
        env = results.env
        sha = env.get("git_sha") or "unknown"
        found.append(StoredBaseline(
            path, ", ".join(names) or path.parent.name, str(env.get("spec_name") or path.stem),
            sum(r.status == "ok" for r in results.records.values()), len(results.records),
            str(env.get("finished") or env.get("started") or ""),
            sha[:12] + ("+dirty" if env.get("git_dirty") else "")))
    return found
