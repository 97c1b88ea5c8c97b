"""Byte models: the headline numbers of docs/perf-notes.md, padding, and scale bytes."""

from __future__ import annotations

from pathlib import Path

from ssmbench.families import make_workload
from ssmbench.families.common import conv_window_read_bytes, state_bytes
from ssmbench.impls.registry import registry
from ssmbench.spec.expand import expand
from ssmbench.spec.load import load_sweep_file

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
        assert states < total < states * 1.12, (fmt, total, states)  # conv + activations: <= 10.5% (int8)


def test_padding_rows_move_no_state() -> None:
    sweep = load_sweep_file(SWEEPS / "smoke.yaml").sweeps[0]
    case = next(c for c in expand(sweep).cases if c.pool == "padded" and c.T == 4)
    wl = make_workload(case)
    impl = registry()["triton.intermediate"]
    assert impl.bytes_moved(case, wl) < impl.bytes_moved(case)


def test_conv_window_reads_whole_sectors() -> None:
    """The d_conv-1 window at a data-dependent offset drags its 32-byte sectors along: a bf16
    row of d_conv-2+T = 8 columns (16 bytes) is read whole (ncu measured this on an H100), a
    long row only the window's sectors, a T=1 row (the window itself) exactly."""
    assert conv_window_read_bytes(act=2, d_conv=4, T=6) == 16
    assert conv_window_read_bytes(act=2, d_conv=4, T=1) == 6
    assert conv_window_read_bytes(act=2, d_conv=4, T=64) == 64
    assert conv_window_read_bytes(act=4, d_conv=4, T=30) == 64


def test_checkpoint_fused_bytes_by_hand() -> None:
    """One fused-kernel row by hand (headline shape, fp32, W=16, T=6): a nowrite row reads the
    checkpoint and its pnat history; a write row also stores the checkpoint. The two-kernel model
    moves more (the coefficients between precompute and main)."""
    from ssmbench.families.common import INDEX_BYTES
    from ssmbench.families.mamba2 import mamba2_checkpoint_bytes, mamba2_checkpoint_fused_bytes

    case = next(c for c in expand(load_sweep_file(SWEEPS / "nemotron3-super-tp8.yaml").sweeps[0]).cases
                if c.batch == 64 and c.state_dtype == "fp32" and c.window == 16)
    state = 16 * 64 * 128 * 4
    x_tok, bc_tok, dt = 16 * 64 * 2, 128 * 2, 16 * 4
    step = 6 * (x_tok + 2 * bc_tok + 16 * 2) + 6 * (x_tok + bc_tok + dt)
    for p, write in ((3, False), (12, True)):
        row = 2 * INDEX_BYTES + state + p * (x_tok + bc_tok + dt) + step + (state if write else 0)
        assert mamba2_checkpoint_fused_bytes(case, 0, [p]) - mamba2_checkpoint_fused_bytes(case, 0, []) == row, p
    assert mamba2_checkpoint_fused_bytes(case, 1, []) == INDEX_BYTES + 3 * 16 * 4 + 6 * x_tok  # a padding row
    assert mamba2_checkpoint_fused_bytes(case, 64, [5] * 64) < mamba2_checkpoint_bytes(case, 64, [5] * 64)
