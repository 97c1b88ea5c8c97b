"""Byte models: the headline numbers of docs/perf-notes.md, padding, and scale bytes."""

from __future__ import annotations

from pathlib import Path

from ssmbench.bytemodel import state_bytes
from ssmbench.expand import expand
from ssmbench.impl import registry
from ssmbench.spec import load_sweep_file
from ssmbench.workload import make_workload

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"


def headline(batch: int, fmt: str):
    sweep = load_sweep_file(SWEEPS / "nemotron3-super-tp8.yaml").sweeps[0]
    return next(c for c in expand(sweep).cases if c.batch == batch and c.state_dtype == fmt and c.window == 6)


def test_state_bytes() -> None:
    assert state_bytes("fp32", 16 * 64, 128) == 16 * 64 * 128 * 4
    assert state_bytes("int8", 16 * 64, 128) == 16 * 64 * 128 + 16 * 64 * 4  # + fp32 row scales


def test_intermediate_headline_is_seven_states_plus_small_change() -> None:
    impl = registry()["triton.intermediate"]
    for fmt, per_state in [("fp32", 4 * 131072), ("bf16", 2 * 131072), ("int8", 131072 + 4096)]:
        total = impl.bytes_moved(headline(256, fmt))
        states = 256 * 7 * per_state
        assert states < total < states * 1.10, (fmt, total, states)  # conv + activations: < 10%


def test_padding_rows_move_no_state() -> None:
    sweep = load_sweep_file(SWEEPS / "smoke.yaml").sweeps[0]
    case = next(c for c in expand(sweep).cases if c.pool == "padded" and c.T == 4)
    wl = make_workload(case)
    impl = registry()["triton.intermediate"]
    assert impl.bytes_moved(case, wl) < impl.bytes_moved(case)
