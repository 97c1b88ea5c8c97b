"""The bandwidth-first checkpoint-replay main (`CheckpointKnobs.bandwidth`, kernel_bw.py; issue 19)
against the fp64 reference, in the CPU interpreter (on a GPU machine the same checks run on the
GPU). Reuses tests/test_triton_checkpoint.py's simulation: multi-step runs with random acceptance
on fresh random inputs, poisoned outputs and coefficients, every step checked against the
reference applied to the kernel's own state (y, write rows' checkpoints within one spacing and
>= 99% bit-identical codes with the same SR fields, untouched slots bit for bit, history rows,
bookkeeping) and the implied state after the last step against an independent reference run.
"""

from __future__ import annotations

import dataclasses
import zlib

import pytest
import torch
from test_triton_checkpoint import DEVICE, _initial, _inputs, _params, _simulate

from ssmbench.impls.triton_checkpoint import CHECKPOINT_SPACE
from ssmbench_kernels.mamba2_replay.kernel import CheckpointKnobs, kernel_names, make_scratch, replay_step
from ssmbench_kernels.mamba2_replay.kernel_bw import state_descriptor

BW = CheckpointKnobs(bandwidth=True, block_p=16, num_warps=4)
"""16 x N chunks: P = 20 below runs two of them (the second masked)."""


@pytest.mark.parametrize(
    "fmt,rounding,window,with_z",
    [
        ("fp32", "rn", "T", True),
        ("fp32", "rn", 16, False),
        ("bf16", "rn", 16, True),
        ("bf16", "sr", "T", True),
        ("fp16", "sr", 16, True),
        ("fp16", "rn", "T", False),
        ("int8", "sr", 16, True),
        ("int8", "rn", "T", True),
        ("fp8", "sr", "T", False),
        ("fp8", "rn", 16, True),
    ],
)
def test_bw_main_matches_reference(fmt, rounding, window, with_z) -> None:
    T = 3
    W = T if window == "T" else window
    seen_write, seen_nowrite = _simulate(fmt, rounding, T, W, P=20, with_z=with_z, knobs=BW,
                                         seed=zlib.crc32(f"bw{fmt}{rounding}{W}".encode()))
    assert seen_write and seen_nowrite, "the simulation must exercise both write and nowrite rows"


@pytest.mark.parametrize(
    "fmt,rounding,window,rect",
    [("fp32", "rn", 16, False), ("fp32", "rn", 16, True), ("bf16", "sr", "T", True), ("bf16", "rn", 16, True),
     ("bf16", "rn", 16, False), ("fp16", "sr", 16, False), ("fp16", "rn", 16, True), ("int8", "sr", 16, True),
     ("fp8", "sr", "T", False)],
)
def test_bw_main_column_tiles_match_reference(fmt, rounding, window, rect) -> None:
    """The state streamed in 16-column tiles (`CheckpointKnobs.n_tile`): N = 40 runs three tiles, the
    last one half masked; SR fields drawn per tile must be the whole row's (the same codes); int8 and
    fp8 take whole rows (a row scale needs every column). Both output forms (`rect_outputs`: write
    rows' outputs from S_ckpt plus the history term, or from S')."""
    T = 3
    W = T if window == "T" else window
    knobs = CheckpointKnobs(bandwidth=True, block_p=16, num_warps=4, n_tile=16, stages=2, rect_outputs=rect)
    seen_write, seen_nowrite = _simulate(fmt, rounding, T, W, P=20, N=40, with_z=True, knobs=knobs,
                                         seed=zlib.crc32(f"tiles{fmt}{rounding}{W}{rect}".encode()))
    assert seen_write and seen_nowrite


@pytest.mark.parametrize(
    "fmt,rounding,window,rect,n_tile",
    [("fp32", "rn", 16, False, 16), ("bf16", "rn", 16, False, 16), ("bf16", "sr", "T", False, 16),
     ("fp16", "sr", 16, False, 16), ("fp16", "sr", "T", False, 16), ("int8", "sr", 16, False, 16),
     ("fp8", "rn", 16, False, 0), ("bf16", "rn", 16, True, 0)],
)
def test_bw_main_split_loops_match_reference(fmt, rounding, window, rect, n_tile) -> None:
    """`split_loops`: write and nowrite rows in their own tile loops, column tiles (N = 40: three
    tiles, the last half masked) and whole rows; write rows' outputs from S' (``rect_outputs`` set
    alongside does not apply: the last case)."""
    T = 3
    W = T if window == "T" else window
    knobs = CheckpointKnobs(bandwidth=True, block_p=16, num_warps=4, n_tile=n_tile, stages=2, rect_outputs=rect,
                            split_loops=True)
    seen_write, seen_nowrite = _simulate(fmt, rounding, T, W, P=20, N=40, with_z=True, knobs=knobs,
                                         seed=zlib.crc32(f"split{fmt}{rounding}{W}{rect}{n_tile}".encode()))
    assert seen_write and seen_nowrite


@pytest.mark.parametrize("fmt,rounding,n_tile", [("fp32", "rn", 16), ("bf16", "sr", 16), ("fp16", "sr", 0)])
def test_bw_main_prefetch_matches_reference(fmt, rounding, n_tile) -> None:
    """`prefetch` (the state tile into L2 before the wait; P x N = 20 x 40: a line count that is not a
    power of two) changes no result. A no-op in the interpreter; on the GPU it compiles."""
    knobs = CheckpointKnobs(bandwidth=True, block_p=16, num_warps=4, n_tile=n_tile, stages=2, prefetch=True)
    seen_write, seen_nowrite = _simulate(fmt, rounding, 3, 16, P=20, N=40, with_z=True, knobs=knobs,
                                         seed=zlib.crc32(f"prefetch{fmt}{rounding}{n_tile}".encode()))
    assert seen_write and seen_nowrite


@pytest.mark.parametrize("fmt,rounding,window,knobs", [
    ("fp32", "rn", 16, dict(n_tile=16, stages=1)),
    ("bf16", "rn", 16, dict(n_tile=16, stages=2, rect_outputs=True, prefetch=True)),
    ("fp16", "sr", "T", dict(n_tile=16, stages=2, split_loops=True)),
    ("int8", "sr", 16, dict()),
])
def test_bw_main_one_masked_chunk(fmt, rounding, window, knobs) -> None:
    """One P-chunk (P = 20 on 32-row programs, masked: the H200 picks' one chunk per head, here with
    masked rows); write and nowrite rows, every form."""
    T = 3
    W = T if window == "T" else window
    seen_write, seen_nowrite = _simulate(fmt, rounding, T, W, P=20, N=40, with_z=True,
                                         knobs=CheckpointKnobs(bandwidth=True, block_p=32, num_warps=4, **knobs),
                                         seed=zlib.crc32(f"onechunk{fmt}{rounding}{W}".encode()))
    assert seen_write and seen_nowrite


def test_bw_main_one_group_one_chunk_no_padding() -> None:
    """G = 1 (every head shares B/C), P = N = 16 in one chunk, no padding rows, W = 8."""
    _simulate("bf16", "sr", 2, 8, H=2, P=16, N=16, G=1, batch=2, steps=2, n_pad=0, pnat_rows=[8, 1],
              knobs=CheckpointKnobs(bandwidth=True, block_p=32, num_warps=2))


def _check_all_padding_step(fmt: str, rounding: str, P: int, N: int, knobs: CheckpointKnobs) -> None:
    """One step of two all-padding rows (H = 2, T = 2, W = 4): zero outputs, no slot, scale or history touched."""
    rs, slots, g = _initial(2, 2, 4, 2, P, N, 1, fmt, [4, 1], n_pad=2, seed=3)
    before = rs.clone()
    A, D, dt_bias = _params(g, 2)
    conv_out, dt_raw, z = _inputs(g, 2, 2, 2, P, N, 1, True)
    d = lambda t: t.to(DEVICE)  # noqa: E731
    y = torch.full((4, 2 * P), float("nan"), dtype=torch.bfloat16, device=DEVICE)
    replay_step(rs, slots, d(conv_out), d(dt_raw), d(A), d(D), d(dt_bias), nheads=2, head_dim=P, dstate=N,
                ngroups=1, T=2, y=y, scratch=make_scratch(2, 2, 2, 4, DEVICE), z=d(z), rounding=rounding, knobs=knobs)
    assert (y == 0).all()
    pairs = [(rs.ckpt.data, before.ckpt.data), (rs.hist_x, before.hist_x), (rs.hist_B, before.hist_B),
             (rs.hist_dt, before.hist_dt)]
    if rs.ckpt.scale is not None:
        pairs.append((rs.ckpt.scale, before.ckpt.scale))
    for a, b in pairs:
        assert torch.equal(a, b)


def test_bw_main_padding_and_pdl_flag() -> None:
    """All-padding rows touch nothing and write zeros; the PDL flag on (with and without the L2
    prefetch before the wait) gives the same bits as off (on the CPU it degrades to stream order;
    on a Hopper GPU it compiles the waits)."""
    _check_all_padding_step("int8", "sr", 8, 8, BW)
    d = lambda t: t.to(DEVICE)  # noqa: E731

    rs, slots, g = _initial(3, 2, 4, 2, 16, 8, 1, "fp16", [4, 1, 3], n_pad=1, seed=4)
    A, D, dt_bias = _params(g, 2)
    conv_out, dt_raw, z = _inputs(g, 3, 2, 2, 16, 8, 1, True)
    outs = []
    for pdl, knobs in ((False, BW), (True, BW), (True, dataclasses.replace(BW, prefetch=True))):
        live = rs.clone()
        y = torch.full((6, 32), float("nan"), dtype=torch.bfloat16, device=DEVICE)
        replay_step(live, slots, d(conv_out), d(dt_raw), d(A), d(D), d(dt_bias), nheads=2, head_dim=16, dstate=8,
                    ngroups=1, T=2, y=y, scratch=make_scratch(3, 2, 2, 4, DEVICE), z=d(z), rounding="sr", seed=5,
                    step=2, pdl=pdl, knobs=knobs)
        outs.append((y, live.ckpt.data, live.hist_x, live.hist_B, live.hist_dt))
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def test_bw_knob_names_and_space() -> None:
    """The knob reaches the tuner's space (never a default) and names its kernels."""
    assert kernel_names(BW) == ("replay_precompute_kernel", "replay_bw_main_kernel")
    names = [k.name for k in CHECKPOINT_SPACE.knobs]
    assert "bandwidth" in names
    config = CHECKPOINT_SPACE.config_of(BW)
    assert config["bandwidth"] is True
    assert all(c.holds(config) for c in CHECKPOINT_SPACE.constraints)
    assert not CHECKPOINT_SPACE.config_of(CheckpointKnobs(fused=True))["bandwidth"]


def test_column_tile_knobs_in_the_space() -> None:
    """n_tile / stages / rect_outputs reach the tuner, only for the bandwidth main; the tiles that
    faulted or miscomputed on the H200 (session 11: pipelined 32-column tiles of the form before,
    pipelined 64-column tiles) are outside the space."""
    def holds(**knobs) -> bool:
        config = CHECKPOINT_SPACE.config_of(CheckpointKnobs(bandwidth=True, block_p=64, **knobs))
        return all(c.holds(config) for c in CHECKPOINT_SPACE.constraints)

    assert holds(n_tile=32, stages=1) and holds(n_tile=16, stages=4) and holds(n_tile=0)
    assert holds(n_tile=32, stages=3, rect_outputs=True) and holds(n_tile=64, stages=1)
    assert not holds(n_tile=32, stages=2) and not holds(n_tile=64, stages=2, rect_outputs=True)
    assert holds(n_tile=16, stages=3, split_loops=True) and not holds(n_tile=16, split_loops=True, rect_outputs=True)
    assert holds(n_tile=32, max_regs=64) and not holds(n_tile=0, max_regs=64)
    by_name = {k.name: k for k in CHECKPOINT_SPACE.knobs}
    fused = CHECKPOINT_SPACE.config_of(CheckpointKnobs(fused=True, n_tile=16, stages=3))
    assert not any(by_name[k].is_active(fused) for k in ("n_tile", "stages", "rect_outputs"))


@pytest.mark.parametrize("fmt,rounding,window", [("bf16", "rn", "T"), ("fp16", "sr", 16)])
def test_bw_main_whole_rows_outputs_from_the_checkpoint(fmt, rounding, window) -> None:
    """`rect_outputs` on whole rows (one column tile), the H200 table's bf16 W = T pick at batch 64."""
    T = 3
    W = T if window == "T" else window
    knobs = CheckpointKnobs(bandwidth=True, block_p=16, num_warps=4, rect_outputs=True)
    seen_write, seen_nowrite = _simulate(fmt, rounding, T, W, P=20, with_z=True, knobs=knobs,
                                         seed=zlib.crc32(f"rect{fmt}{rounding}{W}".encode()))
    assert seen_write


@pytest.mark.parametrize("fmt,rounding,window,knobs", [
    ("fp32", "rn", 16, dict(n_tile=16, stages=2)),
    ("bf16", "rn", 16, dict(n_tile=16, stages=3, rect_outputs=True, prefetch=True)),
    ("bf16", "sr", "T", dict(n_tile=16, stages=2, split_loops=True)),
    ("fp16", "sr", 16, dict()),
    ("fp16", "rn", "T", dict(n_tile=16, stages=2, rect_outputs=True)),
    ("int8", "sr", 16, dict()),
])
def test_bw_main_tma_matches_reference(fmt, rounding, window, knobs) -> None:
    """`CheckpointKnobs.tma`: the state tiles by tensor descriptor. P = 20 on 16-row programs (the second
    chunk's rows 20-31 read the next head's rows, or past the pool for the last head), N = 40 (16-column
    tiles: the last one past N; whole rows: a 64-column box), every output form; int8 keeps its loads."""
    T = 3
    W = T if window == "T" else window
    seen_write, seen_nowrite = _simulate(fmt, rounding, T, W, P=20, N=40, with_z=True,
                                         knobs=CheckpointKnobs(bandwidth=True, block_p=16, num_warps=4, tma=True,
                                                               **knobs),
                                         seed=zlib.crc32(f"tma{fmt}{rounding}{W}{sorted(knobs)}".encode()))
    assert seen_write and seen_nowrite


def test_tma_descriptor_only_where_tma_takes_the_pool() -> None:
    """The descriptor covers the pool as (slots * H * P, N) rows in block_p x n_tile boxes, and is None
    where TMA cannot take it (the main then loads as without the knob): scaled formats, rows that are not
    a multiple of 16 bytes, boxes past 256."""
    pool = torch.zeros(3, 2, 20, 40, dtype=torch.bfloat16)
    desc = state_descriptor(pool, "bf16", 16, 16)
    assert list(desc.shape) == [120, 40] and list(desc.strides) == [40, 1] and list(desc.block_shape) == [16, 16]
    assert state_descriptor(torch.zeros(3, 2, 20, 40, dtype=torch.int8), "int8", 16, 16) is None
    assert state_descriptor(torch.zeros(3, 2, 20, 36, dtype=torch.bfloat16), "bf16", 16, 16) is None
    assert state_descriptor(torch.zeros(3, 2, 20, 36, dtype=torch.float32), "fp32", 16, 16) is not None
    assert state_descriptor(torch.zeros(1, 1, 16, 512, dtype=torch.float32), "fp32", 16, 512) is None


def test_bw_main_tma_falls_back_and_keeps_padding_rows_untouched() -> None:
    """N = 36 bf16 (72-byte rows: no descriptor) runs the loads under the knob; padding rows with TMA read
    slot 0's tile but write zero outputs and touch nothing, as without it."""
    _simulate("bf16", "rn", 2, 8, P=20, N=36, with_z=False, steps=2,
              knobs=CheckpointKnobs(bandwidth=True, block_p=16, num_warps=4, n_tile=16, tma=True), seed=11)
    _check_all_padding_step("bf16", "rn", 16, 16, dataclasses.replace(BW, n_tile=16, tma=True))
