"""The FlashInfer side-by-side tables (tools/gpu/peer_table.py) on the stored H100 headline baseline."""

from __future__ import annotations

from tool_modules import ROOT, load_tool

from ssmbench.output.results import load_results

BASELINE = ROOT / "baselines" / "nvidia-h100-80gb-hbm3" / "nemotron3-super-tp8.json"


_peer_table = load_tool("peer_table")
PAIRS, load_ok, tables = _peer_table.PAIRS, _peer_table.load_ok, _peer_table.tables


def test_win_rows_are_exactly_the_cells_flashinfer_is_faster() -> None:
    records = load_ok(BASELINE)
    expected = 0
    for (impl, fmt, batch, window), mine in records.items():
        peer_name = dict(PAIRS).get(impl)
        peer = records.get((peer_name, fmt, batch, window)) if peer_name else None
        expected += bool(peer and peer.median_us < mine.median_us)
    text = tables(BASELINE)
    win_rows = [line for line in text.split("### Cells FlashInfer wins")[1].splitlines()
                if line.startswith(("| ssu ", "| checkpointing "))]
    assert expected > 0 and len(win_rows) == expected
    assert all("**" in row for row in win_rows)  # the fi/ours ratio is below 1, shown bold


def test_side_by_side_has_every_batch_per_format() -> None:
    batches = {r.params["batch"] for r in load_results(BASELINE).records.values() if r.status == "ok"}
    text = tables(BASELINE)
    for fmt in ("fp32", "bf16", "fp16sr"):
        section = text.split(f"#### {fmt}\n")[1].split("####")[0]
        assert sum(line.startswith("| ") and line[2].isdigit() for line in section.splitlines()) == len(batches)
