"""`ssmbench sweep`'s options, checked before any work: ``--gpus``, ``--shard``, ``--filter``,
the output paths (``-o``, ``--markdown``) and what an earlier run left there (``--resume`` /
``--fresh``), and the spec itself."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmbench.errors import UsageError
from ssmbench.output.results import LogContents, ResultsLog, load_results, log_path, read_log

FILTER_KEYS = ("sweep", "case", "batch", "T", "state_dtype", "rounding", "format", "pool", "accept", "window",
               "pdl", "l2")


# -- options ---------------------------------------------------------------------------------


@dataclass
class SweepOptions:
    spec: Path
    output: Path | str | None = None
    """A file path; a str keeps a trailing ``/`` (a directory, refused) that a Path would drop."""
    impls: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    gpus: str | None = None
    shard: str | None = None
    resume: bool = False
    fresh: bool = False
    """Start over: replace the results at ``output`` and its log even when that run is unfinished."""
    markdown: Path | str | None = None
    setup_timeout_s: float = 300.0
    grace_s: float = 60.0
    start_timeout_s: float = 600.0
    compile_workers: int | None = None
    """Processes of the compile pre-pass (`ssmbench.runs.sweep.compile`): None = one per CPU core
    on CUDA (capped), none on the CPU; 0 = no pre-pass."""
    argv: list[str] = field(default_factory=list)


def parse_gpus(text: str | None) -> list[int]:
    """``0,1,3`` -> [0, 1, 3]; None -> [0]."""
    if text is None or not text.strip():
        return [0]
    try:
        gpus = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--gpus {text!r}: a comma-separated list of GPU indices, e.g. 0,1") from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus {text!r}: indices must be distinct and >= 0")
    return gpus


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``i/n`` (0 <= i < n) -> (i, n)."""
    if text is None:
        return None
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise UsageError(f"--shard {text!r}: need n >= 1 and 0 <= i < n (shards are numbered from 0)")
    return i, n


def parse_filters(items: list[str]) -> dict[str, set[str]]:
    """``key=value[,value...]`` items -> {key: accepted values}. ``case`` takes glob patterns."""
    filters: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise UsageError(f"--filter {item!r}: expected key=value (values comma-separated)")
        if key not in FILTER_KEYS:
            import difflib

            hint = difflib.get_close_matches(key, FILTER_KEYS, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            allowed = ", ".join(FILTER_KEYS)
            raise UsageError(f"--filter {item!r}: unknown key{did_you_mean}; allowed: {allowed}")
        filters.setdefault(key, set()).update(v.strip() for v in value.split(","))
    return filters


def check_output_path(raw: Path | str, flag: str) -> Path:
    """A path the command will write a file to, checked before anything is measured: not a
    directory (nor spelled like one), its parent a writable directory (or creatable under
    one), and writable itself when it exists. No file or directory is left behind."""
    text = str(raw)
    if not text.strip():
        raise UsageError(f"{flag}: an empty path; give a file path")
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise UsageError(f"{flag} {text}: is a directory; give a file path, e.g. {Path(text) / 'results.json'}")
    path = Path(text)
    if path.exists() and not path.is_file():
        raise UsageError(f"{flag} {text}: exists and is not a regular file")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {text}: {ancestor} is a file, not a directory")
    if not can_create_in(ancestor) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag} {text}: not writable here")
    return path


def can_create_in(directory: Path) -> bool:
    """Whether a file can be created in ``directory``, found by trying (permission bits say
    nothing for root, nor about a read-only mount or /proc); the probe is removed at once."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".ssmbench-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def load_spec(path: Path) -> Any:
    """The spec, validated against the registered impls; an unreadable file is a usage error. A
    bare name that is no file here (``smoke``, ``smoke.yaml``) is a shipped sweep
    (`ssmbench.resources.sweep_path`), for every command alike."""
    from ssmbench import resources
    from ssmbench.impls.registry import registry
    from ssmbench.spec.load import load_sweep_file

    path = resources.sweep_path(Path(path))
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; give a sweep spec file (YAML)")
    try:
        return load_sweep_file(path, impl_names=list(registry()))
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (a sweep spec is YAML)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None


def unfinished_run(output: Path) -> str | None:
    """Why the files at ``output`` hold a run that a plain re-run would lose (None: nothing would
    be lost: no log, an empty one, or a log whose run wrote its complete final JSON). A finished
    run may be replaced: that is the nightly case."""
    log = log_path(output)
    final = None
    if output.exists():
        try:
            final = load_results(output)
        except UsageError as exc:
            return f"{output} exists and is not a finished ssmbench results file ({exc})"
    if not log.exists():
        return None
    try:
        logged = read_log(log)
    except UsageError as exc:
        return f"{log} cannot be read ({exc})"
    if not logged.records:
        return None
    if final is None:
        return f"{log} holds {len(logged.records)} record(s) of a run that never wrote {output}"
    if final.env.get("complete") is False:
        return f"{output} is from an interrupted run (complete: false)"
    if any(final.env.get(k) != v for k, v in logged.env.items()):
        return f"{log} holds a later run than {output}, one that never finished"
    return None


def previous_results(output: Path, options: SweepOptions, spec_name: str) -> LogContents | None:
    """What an earlier run left at ``output``, read only: its records with ``--resume`` (from a
    run of this spec only), None to start afresh (``--fresh``, or nothing unfinished there)."""
    if options.fresh:
        return None
    if not options.resume:
        why = unfinished_run(output)
        if why:
            raise UsageError(f"{why}. A plain re-run would overwrite it: continue it with --resume, or "
                             f"start over with --fresh (discards it)")
        return None
    previous = ResultsLog.read_previous(output)
    if previous is None:
        return None
    earlier = previous.env.get("spec_name")
    if earlier is not None and earlier != spec_name:
        raise UsageError(f"--resume: {output} holds a run of spec {earlier!r} ({previous.env.get('spec')}), not "
                         f"{spec_name!r}; give another -o, or --fresh to replace it")
    return previous
