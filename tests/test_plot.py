"""`ssmbench plot` and ``compare --plots`` (ssmbench/output/plot.py), drawn from the stored H200
baselines: each figure is written as a real PNG and SVG whose title names the GPU and commit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("matplotlib")

from ssmbench.cli import app  # noqa: E402
from ssmbench.output.plot import markdown_images  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
H200 = ROOT / "baselines" / "nvidia-h200"
HEADLINE = H200 / "nemotron3-super-tp8.json"
GDN = H200 / "qwen35-gdn.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_figure(stem: Path, *texts: str) -> None:
    """``stem``.png is a PNG of a plausible size; ``stem``.svg an SVG holding ``texts`` (titles, labels)."""
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert 10_000 < png.stat().st_size < 600_000, png.stat().st_size
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    for t in texts:
        assert t in text, f"{t!r} not in {svg.name}"


def test_plot_headline_baseline(tmp_path) -> None:
    result = CliRunner().invoke(app, ["plot", str(HEADLINE), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "speedup vs: triton.intermediate" in result.stdout
    env = json.loads(HEADLINE.read_text())["env"]  # what the figures must name, read independently
    title = (env["gpus"][0]["name"], env["git_sha"][:10])
    copy = f"copy bandwidth {env['gpus'][0]['bandwidth']['measured_tbps']:.2f} TB/s"
    check_figure(tmp_path / "nemotron3-super-tp8-sol", *title, "DRAM SOL (% of measured copy BW)",
                 "median span (us)", copy, "achieved TB/s", "batch", "fp16sr",
                 "triton.checkpoint · w16", "triton.intermediate")
    median = {(c["impl"], c["params"]["batch"], c["params"]["format"], c["params"]["window"]): c["median_us"]
              for c in json.loads(HEADLINE.read_text())["cases"] if c["status"] == "ok"}
    speedup = median["triton.intermediate", 1024, "fp16sr", 6] / median["triton.checkpoint", 1024, "fp16sr", 16]
    check_figure(tmp_path / "nemotron3-super-tp8-speedup", *title, "speedup vs triton.intermediate",
                 "triton.checkpoint · w6", f"{speedup:.2f}x")


def test_plot_comparison_worst_first(tmp_path) -> None:
    """H200 against the H100's run of the same sweep: plotted (with a warning), each pair's change.
    The stored H100 file is marked as measured on older workload draws (``workload: "stale"``, which
    `compare` and `plot` refuse as REDRAWN); the copy here drops the marks, as a file written before
    digests existed."""
    data = json.loads((ROOT / "baselines" / "nvidia-h100-80gb-hbm3" / "qwen35-gdn.json").read_text())
    for record in data["cases"]:
        record.pop("workload", None)
    other = tmp_path / "h100-qwen35-gdn.json"
    other.write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["plot", str(GDN), "--baseline", str(other), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "different GPU models" in result.stderr
    check_figure(tmp_path / "compare", "NVIDIA H200", "NVIDIA H100", "change per pair, worst first",
                 "change of the median span, new vs old (%)", "±3% band")
    svg = (tmp_path / "compare.svg").read_text()
    labels = [line for line in svg.splitlines() if "triton.gdn · " in line]
    assert len(labels) == 19


def test_compare_plots_embedded_in_markdown(tmp_path) -> None:
    md = tmp_path / "report" / "compare.md"
    result = CliRunner().invoke(app, ["compare", str(GDN), str(GDN), "--markdown", str(md),
                                      "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    assert "![compare](../plots/compare.png)" in md.read_text()
    check_figure(tmp_path / "plots" / "compare", "NVIDIA H200")


def test_speedup_vs_names_an_impl_of_the_results(tmp_path) -> None:
    result = CliRunner().invoke(app, ["plot", str(GDN), "--speedup-vs", "triton.nope", "-o", str(tmp_path)])
    assert result.exit_code == 2
    impls = ", ".join(sorted({c["impl"] for c in json.loads(GDN.read_text())["cases"]}))
    assert f"--speedup-vs 'triton.nope': not an impl of these results; allowed: {impls}" in result.stderr


def test_matplotlib_missing_is_exit_2(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    for argv in (["plot", str(GDN), "-o", str(tmp_path)],
                 ["compare", str(GDN), str(GDN), "--plots", str(tmp_path)]):
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert "pip install 'ssmbench[plot]'" in result.stderr and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_markdown_images_link_relative_to_the_report(tmp_path) -> None:
    paths = [tmp_path / "p" / "a.png", tmp_path / "p" / "a.svg"]
    text = markdown_images(paths, tmp_path / "out" / "r.md")
    assert "![a](../p/a.png)" in text and "a.svg" not in text
    assert markdown_images([], tmp_path / "r.md") == ""


def test_sweep_plots_embed_and_never_fail_the_sweep(tmp_path) -> None:
    """``sweep --plots``: the run's figures appended to its Markdown report; a figure that cannot
    be drawn is a warning, the sweep's own exit code stands."""
    import io

    from rich.console import Console

    from ssmbench.cli.plot import sweep_plots

    md = tmp_path / "sweep.md"
    md.write_text("## ssmbench sweep\n")
    err = Console(file=io.StringIO())
    paths = sweep_plots(GDN, tmp_path / "plots", None, md, err)
    assert tmp_path / "plots" / "qwen35-gdn-sol.png" in paths
    assert "![qwen35-gdn-sol](plots/qwen35-gdn-sol.png)" in md.read_text()
    assert sweep_plots(tmp_path / "missing.json", tmp_path / "plots", None, None, err) == []
    assert "warning: --plots:" in err.file.getvalue()
