"""`ssmbench profile` / `validate-bytes` on a CPU: command lines, ncu CSV and sanitizer parsing
(recorded H100 outputs in tests/data), determinism, the byte-model report, and the whole
outer/inner round trip with fake `ncu` / `compute-sanitizer` executables on PATH."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import UsageError
from ssmbench.impls.base import Chain
from ssmbench.impls.registry import registry
from ssmbench.measure.target import prepared_target, range_name
from ssmbench.profiling import ncu, nsys, sanitizer
from ssmbench.profiling import validate_bytes as vb
from ssmbench.profiling.determinism import chain_tensors, check_determinism, first_difference
from ssmbench.profiling.driver import ProfileOptions, inner_argv, tool_env
from ssmbench.profiling.target import resolve

DATA = Path(__file__).parent / "data"
SMOKE = Path(__file__).parent.parent / "sweeps" / "smoke.yaml"
CASE = "H4P12N16G2-b3-T4-fp32-direct-w4-rate0.6-nopdl-hot-zgate-s1"
runner = CliRunner()


# -- command construction ---------------------------------------------------------------------


def test_ncu_command_exact_argv():
    cmd = ncu.ncu_command(["python", "-m", "ssmbench"], Path("out/x"), "ssmbench triton.conv1d C1")
    assert cmd == ["ncu", "--nvtx", "--nvtx-include", "ssmbench triton.conv1d C1", "--clock-control", "none",
                   "--cache-control", "all", "--metrics", ",".join(ncu.METRICS), "--target-processes", "all",
                   "-f", "-o", "out/x", "python", "-m", "ssmbench"]
    with_set = ncu.ncu_command(["p"], Path("r"), "R", metric_set="full", cache_control="none")
    assert with_set[with_set.index("--set") + 1] == "full"
    assert with_set[with_set.index("--cache-control") + 1] == "none"
    with pytest.raises(UsageError, match="cache-control"):
        ncu.ncu_command(["p"], Path("r"), "R", cache_control="some")
    assert ncu.import_command(Path("d/r.ncu-rep")) == ["ncu", "--import", "d/r.ncu-rep", "--csv", "--page", "raw",
                                                        "--print-units", "base"]
    assert ncu.report_path(Path("d/a.b")) == Path("d/a.b.ncu-rep")


def test_metric_list_covers_the_issue():
    for needed in ("gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum",
                   "dram__throughput.avg.pct_of_peak_sustained_elapsed",
                   "sm__warps_active.avg.pct_of_peak_sustained_active", "launch__registers_per_thread",
                   "launch__shared_mem_per_block_static", "launch__shared_mem_per_block_dynamic"):
        assert needed in ncu.METRICS


def test_nsys_and_sanitizer_commands():
    cmd = nsys.nsys_command(["python", "x"], Path("o/r"))
    assert cmd == ["nsys", "profile", "--capture-range=cudaProfilerApi", "--capture-range-end=stop",
                   "--trace=cuda,nvtx", "--force-overwrite=true", "-o", "o/r", "python", "x"]
    assert "would have been" in nsys.missing_message(cmd) and "--capture-range=cudaProfilerApi" in \
        nsys.missing_message(cmd)
    for tool in sanitizer.TOOLS:
        assert sanitizer.sanitizer_command(tool, ["python", "x"]) == [
            "compute-sanitizer", "--tool", tool, "--target-processes", "all", "--error-exitcode", "99",
            "--print-limit", "20", "python", "x"]
    with pytest.raises(ValueError):
        sanitizer.sanitizer_command("initcheck2", ["p"])


def test_inner_argv_reexecutes_this_profile():
    options = ProfileOptions(spec=Path("s.yaml"), case="C", impl="triton.conv1d", tool="ncu", force=True)
    argv = inner_argv(options, "triton.conv1d", Path("d/i.json"))
    assert argv[:3] == [sys.executable, "-m", "ssmbench"]
    assert argv[3:] == ["profile", "s.yaml", "--case", "C", "--impl", "triton.conv1d", "--tool", "ncu", "--device",
                        "auto", "--inner", "--info", "d/i.json", "--force"]
    root = str(Path(__file__).resolve().parents[1])
    assert tool_env()["PYTHONPATH"].split(os.pathsep)[0] == root


def test_range_names():
    assert range_name("triton.intermediate", CASE) == f"ssmbench triton.intermediate {CASE}"
    for bad in ("a@b", "a/b", "x]", "a:b"):
        with pytest.raises(UsageError, match="NVTX"):
            range_name(bad, CASE)


# -- case and impl resolution -----------------------------------------------------------------


def test_resolve_case_and_default_impl():
    sel = resolve(SMOKE, CASE, None)
    assert sel.case.id == CASE and sel.impl.name == "reference.sequential"  # the smoke sweep's baseline
    assert resolve(SMOKE, CASE, "triton.conv1d").impl.name == "triton.conv1d"
    assert resolve(SMOKE, "*-b3-T4-fp32-direct-w4-*", None).case.id == CASE  # a glob matching one case
    with pytest.raises(UsageError, match="closest: " + CASE):
        resolve(SMOKE, CASE[:-1], None)
    with pytest.raises(UsageError, match="matches 4 cases"):
        resolve(SMOKE, "*fp32-direct*", None)
    with pytest.raises(UsageError, match="unknown"):
        resolve(SMOKE, CASE, "triton.nope")
    with pytest.raises(UsageError, match="does not run"):
        resolve(SMOKE, CASE, "reference.gdn")


# -- ncu CSV --------------------------------------------------------------------------------------

SYNTHETIC = (DATA / "ncu-raw-synthetic.csv").read_text()
"""Hand-made in the layout of a real export: scaled units (Kbyte, usecond), separators, two ranges."""


def test_parse_synthetic_csv_units_separators_ranges():
    kernels = ncu.parse_raw_csv(SYNTHETIC)
    assert [k.name for k in kernels] == ["k1", "k2", "k1"]
    first = kernels[0]
    assert first.get(ncu.DRAM_READ) == pytest.approx(1_234_500.0)  # Kbyte, thousands separator
    assert first.get(ncu.DRAM_WRITE) == 2048.0
    assert first.get(ncu.DURATION) == pytest.approx(9020.0)  # usecond -> ns
    assert kernels[1].get(ncu.REGISTERS) is None  # n/a
    assert first.block == "(64, 1, 1)" and kernels[1].grid == "(16, 16, 64)"
    assert first.ranges == [ncu.RangeTag(0, "<default domain>", "ssmbench a C1")]
    assert kernels[2].in_range("ssmbench b C2") and not kernels[2].in_range("ssmbench a C1")
    in_a = [k for k in kernels if k.in_range("ssmbench a C1")]
    assert ncu.measured_dram_bytes(in_a) == pytest.approx(1_234_500 + 2048 + 10_000)


def test_parse_no_kernels_and_garbage():
    assert ncu.parse_raw_csv("==WARNING== No kernels were profiled.\n") == []
    with pytest.raises(ValueError):
        ncu.parse_raw_csv("hello\n")


def test_units():
    assert ncu.unit_scale("byte") == 1 and ncu.unit_scale("Mbyte") == 1e6 and ncu.unit_scale("Gbyte/second") == 1e9
    assert ncu.unit_scale("nsecond") == 1 and ncu.unit_scale("msecond") == 1e6 and ncu.unit_scale("%") == 1
    assert ncu.parse_number("12,345,678") == 12345678 and ncu.parse_number("") is None


H100_L2 = 50 << 20
"""The L2 of the H100 the recorded reports came from (devices report their own; never a default)."""


def test_byte_model_line():
    kernels = ncu.parse_raw_csv(SYNTHETIC)[:2]
    measured = ncu.measured_dram_bytes(kernels)
    line = ncu.byte_model_line(int(measured * 1.1), kernels, H100_L2)
    assert "measured DRAM 1.247 MB" in line and ": +10.0%;" in line and "model consistent (weak check" in line
    assert "none declared" in ncu.byte_model_line(None, kernels, H100_L2)
    unknown = ncu.byte_model_line(int(measured * 1.1), kernels, None)  # no device L2 figure: no band, weak
    assert "L2 size unknown" in unknown and "weak check" in unknown
    assert ncu.deviation_pct(90, 100) == pytest.approx(-10.0) and ncu.deviation_pct(1, 0) is None


def test_parse_recorded_h100_csv():
    """`ncu --import ... --csv --page raw --print-units base` of the headline case (b64, fp32) on the H100."""
    kernels = ncu.parse_raw_csv((DATA / "ncu-raw-intermediate-b64.csv").read_text())
    assert [k.name for k in kernels] == ["conv1d_update_kernel", "mamba2_intermediate_kernel"]
    rng = "ssmbench triton.intermediate H16P64N128G1-b64-T6-fp32-pool-w6-hist-pdl-realistic"
    assert all(k.in_range(rng) for k in kernels) and kernels[0].ranges[0].domain == "<default domain>"
    conv, main = kernels
    assert conv.grid == "(10, 64, 1)" and main.grid == "(16, 16, 64)" and main.block == "(32, 1, 1)"
    assert main.get(ncu.GRID) == 16 * 16 * 64 and conv.get(ncu.BLOCK) == 64
    for metric in ncu.METRICS:
        assert main.get(metric) is not None, metric
    # values in base units: ns, bytes, percent
    assert 50_000 < main.get(ncu.DURATION) < 200_000  # ~87 us
    states = 64 * 6 * 16 * 64 * 128 * 4  # 64 rows x T=6 fp32 states written
    assert states - H100_L2 <= main.get(ncu.DRAM_WRITE) <= states  # short by what L2 kept dirty
    assert 64 * 16 * 64 * 128 * 4 <= main.get(ncu.DRAM_READ) < 1.2 * 64 * 16 * 64 * 128 * 4 + 3e6  # one state read
    assert conv.get(ncu.DRAM_WRITE) == 0  # conv1d's 2.3 MB of writes all stayed in L2
    assert 0 < main.get(ncu.DRAM_PCT) <= 100 and 0 < main.get(ncu.OCCUPANCY) <= 100
    assert main.get(ncu.REGISTERS) > 0


def test_byte_model_line_on_recorded_csv():
    kernels = ncu.parse_raw_csv((DATA / "ncu-raw-intermediate-b64.csv").read_text())
    case = resolve(Path(__file__).parent.parent / "sweeps" / "nemotron3-super-tp8.yaml",
                   "H16P64N128G1-b64-T6-fp32-pool-w6-hist-pdl-realistic", "triton.intermediate").case
    model = registry()["triton.intermediate"].bytes_moved(case, None)
    line = ncu.byte_model_line(model, kernels, H100_L2)
    assert line.startswith(f"byte model {model / 1e6:.3f} MB vs measured DRAM") and "model consistent" in line
    assert "OFF" in ncu.byte_model_line(model // 2, kernels, H100_L2)  # below the DRAM bytes: off whatever L2 kept


# -- sanitizer output ---------------------------------------------------------------------------------


def test_sanitizer_summaries():
    clean = sanitizer.parse_summary("memcheck", "========= COMPUTE-SANITIZER\nok\n========= ERROR SUMMARY: 0 errors\n")
    assert clean.clean and clean.errors == 0
    dirty = sanitizer.parse_summary("memcheck", textwrap.dedent("""\
        ========= COMPUTE-SANITIZER
        ========= Invalid __global__ write of size 4 bytes
        =========     at out_of_bounds_kernel+0x80
        ========= ERROR SUMMARY: 1 error
        ========= ERROR SUMMARY: 1,024 errors
        """))
    assert dirty.errors == 1025 and not dirty.clean
    assert dirty.first_error.startswith("Invalid __global__ write")
    race = sanitizer.parse_summary("racecheck", "========= RACECHECK SUMMARY: 3 hazards displayed (0 errors, "
                                                "3 warnings)\n========= ERROR SUMMARY: 0 errors\n")
    assert race.clean and race.warnings == 3
    failed = sanitizer.parse_summary("synccheck", "Traceback ...\n")
    assert failed.errors is None and not failed.clean and "no ERROR SUMMARY" in failed.describe()


def test_sanitizer_recorded_h100_outputs():
    clean = sanitizer.parse_summary("memcheck", (DATA / "sanitizer-memcheck-clean.log").read_text())
    assert clean.clean
    race = sanitizer.parse_summary("racecheck", (DATA / "sanitizer-racecheck-clean.log").read_text())
    assert race.clean, race.describe()  # racecheck prints only its RACECHECK SUMMARY line
    oob = sanitizer.parse_summary("memcheck", (DATA / "sanitizer-memcheck-oob.log").read_text())
    assert oob.errors and oob.errors > 0 and oob.first_error == "Invalid __global__ write of size 4 bytes"


# -- determinism ----------------------------------------------------------------------------------------


def test_determinism_of_a_reference_chain_on_cpu():
    selection = resolve(SMOKE, CASE, "reference.intermediate")
    target = prepared_target(selection.case, selection.impl, torch.device("cpu"))
    result = check_determinism(target.chain, 3)
    assert result.identical and result.tensors > 3, result.describe()
    assert any("pool" in name for name in chain_tensors(target.chain))  # the stored state, not only outputs


def test_determinism_catches_a_planted_race():
    """A chain whose output depends on something other than its inputs (here: a counter, as a
    race depends on scheduling) fails, naming the tensor and the first differing element."""
    y = torch.zeros(4, 3)
    calls = [0]

    def launch() -> None:
        calls[0] += 1
        y.fill_(1.0)
        y[2, 1] = 1.0 + (calls[0] > 1) * 0.5  # run 1 writes a different value at one element

    chain = Chain([launch], ["racy_kernel"], outputs=lambda: {"y": y})
    result = check_determinism(chain, 3)
    assert not result.identical
    assert result.difference.run == 1 and result.difference.index == (2, 1)
    assert "NOT deterministic" in result.describe()
    with pytest.raises(ValueError):
        check_determinism(chain, 1)


def test_first_difference_is_bitwise():
    a = torch.tensor([0.0, float("nan"), 1.0])
    assert first_difference(a, a.clone()) is None  # NaN == NaN bitwise
    b = a.clone()
    b[0] = -0.0
    assert first_difference(a, b)[0] == (0,)  # signed zero differs in its bits


# -- validate-bytes report logic ---------------------------------------------------------------------------


def _pairs(models: dict[str, int | None], status: str = "ok") -> list[vb.Pair]:
    return [vb.Pair("s", case, "triton.x", f"ssmbench triton.x {case}", model, status)
            for case, model in models.items()]


def test_validate_report_from_synthetic_csv():
    kernels = ncu.parse_raw_csv(SYNTHETIC.replace("ssmbench a C1", "ssmbench triton.x C1")
                                .replace("ssmbench b C2", "ssmbench triton.x C2"))
    measured_c1 = ncu.measured_dram_bytes([k for k in kernels if k.in_range("ssmbench triton.x C1")])
    report = vb.build_report(_pairs({"C1": int(measured_c1 * 1.05), "C2": 100, "C3": 5}) +
                             [vb.Pair("s", "C4", "triton.x", "r", 1, "fail", "verification failed")], kernels)
    assert [r.pair.case for r in report.results] == ["C1", "C2"]
    assert report.results[0].deviation == pytest.approx(5.0, abs=0.01)
    assert report.results[1].deviation == pytest.approx((100 - 1001) / 1001 * 100)  # read 1 Kbyte + write 1 byte
    assert [r.pair.case for r in report.off()] == ["C2"]  # below what DRAM saw: off
    assert len(report.problems) == 2 and "no kernel profiled" in report.problems[0]
    summary = report.per_impl()["triton.x"]
    assert summary["pairs"] == 2 and summary["worst"] == pytest.approx(-90.01, abs=0.01) and summary["off"] == 1


def test_byte_check_band():
    """Writes still dirty in L2 are invisible to ncu: above the DRAM bytes by up to kernels x L2 is
    consistent, below the DRAM bytes or above the band is off; a band wider than the threshold is weak."""
    l2 = 50e6
    check = ncu.ByteCheck(model=1000e6, dram=950e6, kernels=1, l2_bytes=l2)
    assert check.upper == 1000e6 and not check.off(10) and not check.weak(10)
    assert ncu.ByteCheck(1000e6, 950e6, 2, l2).weak(10)  # band 100 MB on 950 MB: wider than 10%
    assert ncu.ByteCheck(800e6, 950e6, 2, l2).off(10)  # model 16% below what DRAM saw
    assert not ncu.ByteCheck(900e6, 950e6, 2, l2).off(10)  # 5% below: within the threshold
    assert ncu.ByteCheck(1200e6, 950e6, 2, l2).off(10)  # above the band by more than 10%
    small = ncu.ByteCheck(4e6, 2e6, 1, l2)  # a chain smaller than L2: anything up to 52 MB is consistent
    assert not small.off(10) and small.weak(10)


def test_validate_report_from_recorded_h100_run():
    """The recorded validate-bytes run (tools/gpu/validate-bytes.yaml, shipped impls): every pair
    finds its kernels by range name; no shipped model is off; small chains are weak checks."""
    pairs = vb.read_manifest(DATA / "validate-bytes.manifest.json")
    kernels = ncu.parse_raw_csv((DATA / "validate-bytes.csv").read_text())
    report = vb.build_report(pairs, kernels)
    assert not report.problems and len(report.results) == len(pairs) >= 18
    assert {r.pair.impl: r.kernels for r in report.results} == {"triton.intermediate": 2, "triton.conv1d": 1}
    assert sum(r.kernels for r in report.results) == len(kernels)  # every kernel belongs to exactly one pair
    assert not report.off()  # the shipped models are inside what ncu bounds
    by_case = {(r.pair.impl, r.pair.case.split("-")[1], r.pair.case.split("-")[3]): r for r in report.results}
    big = by_case[("triton.intermediate", "b256", "fp32")]  # ~1 GB: the model is within 3.3% of DRAM bytes
    assert 0 < big.deviation < 5 and not big.check.weak(15)
    assert by_case[("triton.conv1d", "b64", "fp32")].check.weak(10)  # 4 MB chain: L2 hides its writes
    summary = report.per_impl()
    assert set(summary) == {"triton.intermediate", "triton.conv1d"} and summary["triton.conv1d"]["pairs"] == 9
    assert summary["triton.conv1d"]["weak"] == 9 and summary["triton.intermediate"]["off"] == 0


# -- round trip with fake tools on PATH ---------------------------------------------------------------------

FAKE_NCU = '''#!{python}
"""Fake ncu: runs the inner command, then --import prints one kernel per NVTX range the inner
process recorded (DRAM bytes = byte model x $FAKE_FACTOR)."""
import json, os, subprocess, sys
from pathlib import Path
args = sys.argv[1:]
if "--import" in args:
    state = json.loads(Path(args[args.index("--import") + 1]).read_text())
    print('"ID","Kernel Name","Block Size","Grid Size","Id:Domain:Start/Stop_Range:PL_Type:Msg",'
          '"dram__bytes_read.sum","dram__bytes_write.sum","gpu__time_duration.sum"')
    print('"","","","","","byte","byte","nsecond"')
    info = json.loads(Path(state["info"]).read_text())
    entries = info if isinstance(info, list) else [dict(info, status="ok")]
    factor = float(os.environ.get("FAKE_FACTOR", "1"))
    for i, e in enumerate(entries):
        if e["status"] != "ok":
            continue
        total = (e.get("model_bytes") or 1000) * factor
        print(f'"{{i}}","fake_kernel","(1, 1, 1)","(1, 1, 1)"," ""{{i}}:<default domain>:{{e["range"]}}:none"" ",'
              f'"{{total * 0.25:,.0f}}","{{total * 0.75:,.0f}}","1,000"')
    sys.exit(0)
out = args[args.index("-o") + 1]
inner = args[args.index("-o") + 2:]
rc = subprocess.call(inner)
Path(out + ".ncu-rep").write_text(json.dumps({{"info": inner[inner.index("--info") + 1], "argv": args}}))
sys.exit(rc)
'''

FAKE_SANITIZER = '''#!{python}
import os, subprocess, sys
args = sys.argv[1:]
tool = args[args.index("--tool") + 1]
rc = subprocess.call(args[args.index("20") + 1:]) if os.environ.get("FAKE_RUN_INNER", "1") == "1" else 0
errors = int(os.environ.get("FAKE_ERRORS_" + tool, "0"))
print("========= ERROR SUMMARY: %d error%s" % (errors, "" if errors == 1 else "s"))
sys.exit(99 if errors else rc)
'''


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("ncu", FAKE_NCU), ("compute-sanitizer", FAKE_SANITIZER)):
        path = bin_dir / name
        path.write_text(text.format(python=sys.executable))
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_profile_ncu_round_trip(fake_tools):
    out = fake_tools / "prof"
    args = ["profile", str(SMOKE), "--case", CASE, "--tool", "ncu", "-o", str(out)]
    result = runner.invoke(app, [*args, "--impl", "triton.conv1d"])
    assert result.exit_code == 0, result.output
    assert "fake_kernel" in result.output and "+0.0%" in result.output and "model consistent" in result.output
    stem = out / f"triton.conv1d-{CASE}"
    state = json.loads(Path(f"{stem}.ncu-rep").read_text())
    assert state["argv"][state["argv"].index("--nvtx-include") + 1] == f"ssmbench triton.conv1d {CASE}"
    info = json.loads(Path(f"{stem}.info.json").read_text())
    assert info["range"] == f"ssmbench triton.conv1d {CASE}" and info["model_bytes"] > 0
    assert "conv1d_update_kernel" in info["kernel_names"] and Path(f"{stem}.csv").exists()
    result = runner.invoke(app, args)  # the default impl (the smoke sweep's baseline) declares no byte model
    assert result.exit_code == 0 and "none declared by the impl" in result.output, result.output


def test_profile_sanitizer_round_trip(fake_tools, monkeypatch):
    out = fake_tools / "san"
    result = runner.invoke(app, ["profile", str(SMOKE), "--case", CASE, "--tool", "sanitizer", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "all sanitizer runs clean" in result.output
    monkeypatch.setenv("FAKE_ERRORS_racecheck", "2")
    monkeypatch.setenv("FAKE_RUN_INNER", "0")  # the inner run was covered above
    result = runner.invoke(app, ["profile", str(SMOKE), "--case", CASE, "--tool", "sanitizer", "-o", str(out)])
    assert result.exit_code == 1 and "racecheck: 2 error(s)" in result.output


def test_validate_bytes_round_trip(fake_tools, monkeypatch):
    args = ["validate-bytes", str(SMOKE), "--impl", "triton.conv1d", "--filter", "case=*-T4-fp32-direct-w4-*",
            "-o", str(fake_tools / "vb")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "every byte model within 10% of what ncu bounds" in result.output
    table = json.loads((fake_tools / "vb" / "validate-bytes.json").read_text())
    assert [p["deviation_pct"] for p in table["pairs"]] == [pytest.approx(0.0, abs=0.01)]
    monkeypatch.setenv("FAKE_FACTOR", "1.25")  # measured 25% above the model: listed, exit 1
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "off by more than 10%" in result.output


def test_nsys_missing_exits_2_with_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nsys (nor anything else) on PATH
    result = runner.invoke(app, ["profile", str(SMOKE), "--case", CASE, "--tool", "nsys", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "nsys (Nsight Systems) is not installed" in result.output
    assert "nsys profile --capture-range=cudaProfilerApi" in result.output and "--inner" in result.output


def test_cli_usage_errors(tmp_path):
    for args, message in ((["--tool", "perf"], "allowed: ncu, nsys, sanitizer"), ([], "nothing to do"),
                          (["--tool", "nsys", "--set", "full"], "--set is an ncu option"),
                          (["--tool", "ncu", "--cache-control", "x"], "cache-control")):
        result = runner.invoke(app, ["profile", str(SMOKE), "--case", CASE, *args])
        assert result.exit_code == 2 and message in result.output, result.output


def test_cli_determinism_on_cpu():
    result = runner.invoke(app, ["profile", str(SMOKE), "--case", CASE, "--determinism", "2", "--device", "cpu"])
    assert result.exit_code == 0 and "deterministic: 2 runs bit-identical" in result.output, result.output


def test_every_registered_impl_name_fits_a_range():
    for name in registry():
        range_name(name, CASE)
