"""The two halves of `ssmbench profile` / `ssmbench validate-bytes`.

Outer (what the user runs): find the tool, build its command around ``sys.executable -m ssmbench
... --inner``, run it with its output kept in ``-o DIR``, parse what it wrote, print tables.
Inner (what the tool runs): build the case as the sweep does, verify, warm up, run the chain
inside the NVTX range, and leave a small JSON (byte model, notes) for the outer half.

Return values are exit codes: 0 ok, 1 found a problem (errors, nondeterminism, byte models off,
verification failed), 2 cannot run (tool missing, bad input).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmbench.measure.target import VerificationFailed, prepared_target, range_name, resolve_device
from ssmbench.profiling import ncu, nsys, sanitizer
from ssmbench.profiling.target import Selection, run_in_range

TOOLS = ("ncu", "nsys", "sanitizer")
EXECUTABLES = {"ncu": "ncu", "nsys": "nsys", "sanitizer": "compute-sanitizer"}
WARMUP = {"ncu": 3, "nsys": 3, "sanitizer": 0}
"""Chain launches before the profiled one (the build already ran it once for verification)."""


@dataclass
class ProfileOptions:
    spec: Path
    case: str
    impl: str | None = None
    tool: str | None = None
    metric_set: str | None = None
    out_dir: Path = Path("ssmbench-profile")
    determinism: int | None = None
    force: bool = False
    device: str = "auto"
    cache_control: str = "all"


def file_stem(impl_name: str, case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{impl_name}-{case_id}")


def inner_argv(options: ProfileOptions, impl_name: str, info: Path) -> list[str]:
    """The command the tool runs: this same profile, in the inner role."""
    argv = [sys.executable, "-m", "ssmbench", "profile", str(options.spec), "--case", options.case, "--impl", impl_name,
            "--tool", str(options.tool), "--device", options.device, "--inner", "--info", str(info)]
    return [*argv, "--force"] if options.force else argv


def tool_env() -> dict[str, str]:
    """The inner process imports this checkout's ssmbench (and its ssmbench_kernels, under
    kernels/) whatever its working directory."""
    root = str(Path(__file__).resolve().parents[2])
    kernels = [str(Path(root) / "kernels")] if (Path(root) / "kernels" / "ssmbench_kernels").is_dir() else []
    env = dict(os.environ)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *kernels, *rest])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_logged(cmd: list[str], log: Path) -> int:
    """Run ``cmd``, its stdout and stderr together into ``log``; its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=tool_env(), check=False).returncode


def _tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join("    " + line for line in text[-lines:])


# -- inner -------------------------------------------------------------------------------------


def inner_main(selection: Selection, tool: str, device: str, force: bool, info: Path | None, console: Any) -> int:
    """In the process under the tool: build, verify, warm up, one chain launch inside the range."""
    dev = resolve_device(device, indexed=True)  # cuda:0, as the sweep's worker: set as current, recorded
    try:
        target = prepared_target(selection.case, selection.impl, dev, force=force)
    except VerificationFailed as exc:
        console.print(f"[bold red]refusing to profile[/]: {exc} (--force profiles it anyway)", highlight=False)
        return 1
    target.warm_up(WARMUP.get(tool, 0))
    run_in_range(target, cuda_profiler=tool == "nsys")
    if info is not None:
        info.write_text(json.dumps({"range": target.range_name, "model_bytes": target.byte_model(),
                                    "l2_bytes": target.l2_bytes,
                                    "kernel_names": list(target.chain.kernel_names),
                                    "notes": target.verify_notes, "device": str(dev)}))
    console.print(f"ran {target.impl.name} on {target.case.id} inside NVTX range {target.range_name!r}",
                  highlight=False)
    return 0


# -- outer -------------------------------------------------------------------------------------


def _missing(tool: str, cmd: list[str], console: Any) -> int:
    if tool == "nsys":
        console.print(f"[bold red]error[/]: {nsys.missing_message(cmd)}", highlight=False, soft_wrap=True)
    else:
        console.print(f"[bold red]error[/]: {EXECUTABLES[tool]} not found on PATH; the command would have been:\n"
                      f"  {shlex.join(cmd)}", highlight=False, soft_wrap=True)
    return 2


def profile_main(options: ProfileOptions, selection: Selection, console: Any) -> int:
    """Determinism first (when asked), then the tool (when asked)."""
    code = 0
    if options.determinism is not None:
        code = max(code, determinism_main(options, selection, console))
    if options.tool is not None:
        code = max(code, {"ncu": profile_ncu, "nsys": profile_nsys, "sanitizer": profile_sanitizer}[options.tool](
            options, selection, console))
    return code


def determinism_main(options: ProfileOptions, selection: Selection, console: Any) -> int:
    from ssmbench.profiling.determinism import check_determinism

    dev = resolve_device(options.device, indexed=True)
    try:
        target = prepared_target(selection.case, selection.impl, dev, force=options.force)
    except VerificationFailed as exc:
        console.print(f"[bold red]refusing to check determinism[/]: {exc} (--force checks it anyway)", highlight=False)
        return 1
    result = check_determinism(target.chain, options.determinism or 0, target.sync)
    colour = "green" if result.identical else "bold red"
    console.print(f"[{colour}]{result.describe()}[/] ({selection.impl.name} on {selection.case.id}, {dev})",
                  highlight=False)
    return 0 if result.identical else 1


def _stems(options: ProfileOptions, selection: Selection) -> tuple[Path, Path]:
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    stem = out / file_stem(selection.impl.name, selection.case.id)
    return stem, stem.with_name(stem.name + ".info.json")


def _read_info(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def profile_ncu(options: ProfileOptions, selection: Selection, console: Any) -> int:
    stem, info = _stems(options, selection)
    nvtx = range_name(selection.impl.name, selection.case.id)
    cmd = ncu.ncu_command(inner_argv(options, selection.impl.name, info), stem, nvtx, metric_set=options.metric_set,
                          cache_control=options.cache_control)
    if shutil.which(EXECUTABLES["ncu"]) is None:
        return _missing("ncu", cmd, console)
    log = stem.with_name(stem.name + ".ncu.log")
    console.print(f"$ {shlex.join(cmd)}", highlight=False, markup=False, soft_wrap=True)
    rc = run_logged(cmd, log)
    report = ncu.report_path(stem)
    if rc != 0 or not report.exists():
        console.print(f"[bold red]ncu failed[/] (exit {rc}); log {log}:\n{_tail(log)}", highlight=False)
        return 1
    csv_path = stem.with_name(stem.name + ".csv")
    exported = subprocess.run(ncu.import_command(report), capture_output=True, text=True, check=False)
    csv_path.write_text(exported.stdout)
    kernels = ncu.parse_raw_csv(exported.stdout)
    if not kernels:
        console.print(f"[bold red]no kernel was profiled[/] inside NVTX range {nvtx!r}; log {log}:\n{_tail(log)}",
                      highlight=False)
        return 1
    meta = _read_info(info)
    console.print(ncu.kernel_table(kernels, f"ncu: {selection.impl.name} on {selection.case.id} "
                                            f"(--cache-control {options.cache_control})"))
    duration = ncu.total(kernels, ncu.DURATION)
    if duration is not None:
        console.print(f"{len(kernels)} kernel(s), summed duration {duration / 1e3:.2f} us (ncu serializes "
                      "kernels: not the PDL span)", highlight=False)
    console.print(ncu.byte_model_line(meta.get("model_bytes"), kernels, meta.get("l2_bytes")),
                  highlight=False)
    for note in meta.get("notes", []):
        console.print(f"[yellow]note[/]: {note}", highlight=False)
    console.print(f"report {report}, CSV {csv_path}, log {log}", highlight=False)
    return 0


def profile_nsys(options: ProfileOptions, selection: Selection, console: Any) -> int:
    stem, info = _stems(options, selection)
    cmd = nsys.nsys_command(inner_argv(options, selection.impl.name, info), stem)
    if shutil.which(EXECUTABLES["nsys"]) is None:
        return _missing("nsys", cmd, console)
    log = stem.with_name(stem.name + ".nsys.log")
    console.print(f"$ {shlex.join(cmd)}", highlight=False, markup=False, soft_wrap=True)
    rc = run_logged(cmd, log)
    if rc != 0:
        console.print(f"[bold red]nsys failed[/] (exit {rc}); log {log}:\n{_tail(log)}", highlight=False)
        return 1
    console.print(f"report {stem}.nsys-rep (capture range: cudaProfilerStart/Stop around the chain), log {log}",
                  highlight=False)
    return 0


def profile_sanitizer(options: ProfileOptions, selection: Selection, console: Any) -> int:
    from rich.table import Table

    stem, info = _stems(options, selection)
    inner = inner_argv(options, selection.impl.name, info)
    if shutil.which(EXECUTABLES["sanitizer"]) is None:
        return _missing("sanitizer", sanitizer.sanitizer_command("memcheck", inner), console)
    summaries = []
    for tool in sanitizer.TOOLS:
        cmd = sanitizer.sanitizer_command(tool, inner)
        log = stem.with_name(f"{stem.name}.{tool}.log")
        console.print(f"$ {shlex.join(cmd)}", highlight=False, markup=False, soft_wrap=True)
        rc = run_logged(cmd, log)
        summary = sanitizer.parse_summary(tool, log.read_text(errors="replace"), log)
        summary.exit_code = rc
        summaries.append(summary)
    table = Table(title=f"compute-sanitizer: {selection.impl.name} on {selection.case.id} (eager launches)")
    for name in ("tool", "errors", "warnings", "exit", "first error", "log"):
        table.add_column(name, overflow="fold")
    for s in summaries:
        errors = "no summary" if s.errors is None else str(s.errors)
        style = "green" if s.clean and s.exit_code == 0 else "red"
        table.add_row(s.tool, f"[{style}]{errors}[/]", str(s.warnings), str(s.exit_code), s.first_error, str(s.log))
    console.print(table)
    bad = [s for s in summaries if not s.clean or s.exit_code != 0]
    if bad:
        console.print(f"[bold red]{len(bad)} of {len(summaries)} sanitizer run(s) found errors or failed[/]: "
                      + "; ".join(s.describe() for s in bad), highlight=False)
        return 1
    console.print("all sanitizer runs clean", highlight=False)
    return 0


# -- validate-bytes ----------------------------------------------------------------------------


@dataclass
class ValidateOptions:
    spec: Path
    impls: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    out_dir: Path = Path("ssmbench-validate-bytes")
    threshold: float = 10.0
    device: str = "auto"
    force: bool = False


def validate_inner_argv(options: ValidateOptions, manifest: Path) -> list[str]:
    argv = [sys.executable, "-m", "ssmbench", "validate-bytes", str(options.spec), "--device", options.device,
            "--inner", "--info", str(manifest)]
    for name in options.impls:
        argv += ["--impl", name]
    for item in options.filters:
        argv += ["--filter", item]
    return [*argv, "--force"] if options.force else argv


def validate_inner(options: ValidateOptions, sweep_file: Any, manifest: Path) -> int:
    from ssmbench.profiling.validate_bytes import plan_pairs, run_pairs_inner

    triples, _ = plan_pairs(sweep_file, options.impls, options.filters)
    run_pairs_inner(triples, resolve_device(options.device, indexed=True), manifest, force=options.force)
    return 0


def validate_main(options: ValidateOptions, sweep_file: Any, console: Any) -> int:
    from ssmbench.errors import UsageError
    from ssmbench.profiling import validate_bytes as vb

    triples, notes = vb.plan_pairs(sweep_file, options.impls, options.filters)
    for note in notes:
        console.print(f"[yellow]note[/]: {note}", highlight=False)
    if not triples:
        raise UsageError("no (case, impl) pair with a byte model matched: nothing to validate")
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    manifest, stem = out / "validate-bytes.manifest.json", out / "validate-bytes"
    cmd = ncu.ncu_command(validate_inner_argv(options, manifest), stem, vb.NVTX_INCLUDE)
    if shutil.which(EXECUTABLES["ncu"]) is None:
        return _missing("ncu", cmd, console)
    console.print(f"{len(triples)} (case, impl) pair(s); $ {shlex.join(cmd)}", highlight=False, markup=False)
    log = out / "validate-bytes.ncu.log"
    rc = run_logged(cmd, log)
    report_file = ncu.report_path(stem)
    if rc != 0 or not report_file.exists() or not manifest.exists():
        console.print(f"[bold red]ncu failed[/] (exit {rc}); log {log}:\n{_tail(log)}", highlight=False)
        return 1
    exported = subprocess.run(ncu.import_command(report_file), capture_output=True, text=True, check=False)
    (out / "validate-bytes.csv").write_text(exported.stdout)
    report = vb.build_report(vb.read_manifest(manifest), ncu.parse_raw_csv(exported.stdout), options.threshold)
    vb.render(report, console)
    (out / "validate-bytes.json").write_text(json.dumps({
        "threshold_pct": report.threshold, "per_impl": report.per_impl(), "problems": report.problems,
        "pairs": [{"impl": r.pair.impl, "case": r.pair.case, "kernels": r.kernels, "model_bytes": r.pair.model_bytes,
                   "dram_read": r.read, "dram_write": r.write, "upper": r.check.upper if r.check else None,
                   "deviation_pct": r.deviation, "off": r in report.off(), "weak": r in report.weak()}
                  for r in report.results],
    }, indent=1))
    console.print(f"report {report_file}, CSV {out / 'validate-bytes.csv'}, table {out / 'validate-bytes.json'}",
                  highlight=False)
    return 1 if report.off() or report.problems else 0
