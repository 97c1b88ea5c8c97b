"""`ssmbench check` can be trusted on any machine: Triton kernels run in the interpreter on a CPU
without anyone setting TRITON_INTERPRET, a case whose workload cannot be built says why once,
failures and errors are counted apart, progress shows in a log, and bad options exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import ssmbench.output.report
import ssmbench.runs.check
from ssmbench.cli import app

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "sweeps" / "smoke.yaml"
ONE_CASE = "H4P12N16G2-b3-T1-fp32-direct-w1-*"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cpu_check_runs_triton_in_the_interpreter_without_the_variable() -> None:
    """A fresh process without TRITON_INTERPRET: check sets it before any Triton kernel module
    is imported (Triton reads it when @triton.jit decorates) and says so once."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "ssmbench", "check", str(SMOKE), "--impl", "triton.conv1d",
                          "--impl", "triton.intermediate", "--case", ONE_CASE],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr.count("no CUDA device: Triton kernels run in Triton's interpreter (slow)") == 1
    assert run.stdout.strip().splitlines()[-1] == "2 passed, 0 failed, 0 errors"
    assert "active drivers" not in run.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_check_device_cuda_without_a_gpu_exits_2() -> None:
    result = CliRunner().invoke(app, ["check", str(SMOKE), "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA device" in result.output


def test_a_workload_that_cannot_be_built_is_said_once_per_case(monkeypatch) -> None:
    def too_big(case, device=None):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 600 TB")

    monkeypatch.setattr(ssmbench.runs.check, "make_workload", too_big)
    result = CliRunner().invoke(app, ["check", str(SMOKE), "--case", ONE_CASE, "--impl", "reference.intermediate",
                                      "--impl", "reference.replay"])
    assert result.exit_code == 1, result.output
    assert result.output.count("600 TB") == 1 and "workload could not be built" in result.output
    assert result.output.strip().splitlines()[-1] == "0 passed, 0 failed, 2 errors"


def test_fail_and_error_are_counted_apart(monkeypatch) -> None:
    real = ssmbench.runs.check.check_pair

    def one_of_each(case, impl, workload):
        result = real(case, impl, workload)
        if impl.name == "reference.replay":
            result.status, result.message = "error", "planted"
        elif impl.name == "reference.intermediate":
            result.status = "fail"
        return result

    monkeypatch.setattr(ssmbench.runs.check, "check_pair", one_of_each)
    result = CliRunner().invoke(app, ["check", str(SMOKE), "--case", ONE_CASE, "--impl", "reference.intermediate",
                                      "--impl", "reference.replay", "--impl", "reference.sequential"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "1 passed, 1 failed, 1 errors"


def test_progress_lines_when_not_a_terminal(monkeypatch) -> None:
    monkeypatch.setitem(ssmbench.output.report.PLAIN_INTERVAL_S, "check", 0.0)
    result = CliRunner().invoke(app, ["check", str(SMOKE), "--case", ONE_CASE, "--impl", "reference.intermediate",
                                      "--impl", "reference.replay"])
    assert result.exit_code == 0, result.output
    assert "check: 1/2 pairs, 0 failed, 0 errors, " in result.output
    assert "check: 2/2 pairs, 0 failed, 0 errors, " in result.output


@pytest.mark.parametrize("args, message", [
    (["--case", "nothing-like-this*"], "matches no case"),
    (["--impl", "reference.nope"], "unknown"),
    (["--device", "tpu"], "allowed: auto, cpu, cuda"),
    (["--impl", "triton.gdn", "--case", ONE_CASE], "nothing was checked"),
])
def test_bad_check_options_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["check", str(SMOKE), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_bad_spec_paths_exit_2(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\x00\xff\xfe")
    for spec, message in ((tmp_path, "directory"), (tmp_path / "missing.yaml", "no such file"), (binary, "")):
        result = CliRunner().invoke(app, ["check", str(spec)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output and "internal error" not in result.output


def test_list_says_where_triton_impls_run() -> None:
    result = CliRunner().invoke(app, ["list"], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "needs GPU" not in result.output
    line = next(line for line in result.output.splitlines() if "triton.intermediate" in line)
    assert "Triton's interpreter" in line


def test_triton_modules_are_told_from_references() -> None:
    """The warning that kernels were imported before the interpreter could be set looks for the
    modules that hold ``@triton.jit`` kernels: every family's kernel module and the shared Triton
    helpers, never a reference (so it fires exactly when it should after the family move)."""
    from pathlib import Path

    from ssmbench.runs.check import is_triton_module

    root = Path(__file__).resolve().parent.parent / "kernels"
    for path in root.glob("ssmbench_kernels/*/*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        has_jit = "import triton" in path.read_text()
        assert is_triton_module(name) == has_jit, name
    assert not is_triton_module("kernels.triton.conv1d")
