"""`triton.checkpoint.bw`: the `triton.checkpoint` chain with the bandwidth-first main forced
(`CheckpointKnobs.bandwidth`, issue 19), registered as its own impl so one sweep times it beside
the default form, cell by cell (a `--plugin` module: `tools/gpu/replay_bw_h200.sh`); and
`triton.checkpoint.tiles-*`: the bandwidth main with the state streamed in column tiles
(`CheckpointKnobs.n_tile`, `stages`; session 11), fixed knobs on every case (`TILE_VARIANTS`); and
`triton.checkpoint.pick+*`: the knobs `triton.checkpoint` picks for the case (table or default), with a few
fields overridden (`PICK_VARIANTS`, session 12); and `triton.checkpoint.as-b64` / `as-b128` / `as-b256` /
`as-b512`: the knobs its table picks at that batch, on every case (session 14: the b64 entries at the batches below,
where the fused default runs; the b128 entries at the batches above; session 16: below).

Knobs: ``bandwidth=True`` plus $SSMBENCH_BW_KNOBS (``block_p=64,num_warps=4,max_regs=0`` by
default; any `CheckpointKnobs` field, ints and booleans), for every case; no knob table is read.
Bytes: the parent's model (the default form's), a few KB per request below the two-kernel
form's scratch traffic.

    PYTHONPATH=$PWD:$PWD/kernels:$PWD/tools/gpu python3 -m ssmbench sweep SPEC --plugin checkpoint_bw_plugin \\
        --impl triton.checkpoint --impl triton.checkpoint.bw
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from picked import ConvChanges, pick_at_batch, pick_with

from ssmbench.impls.base import register
from ssmbench.impls.triton_checkpoint import CHECKPOINT_SPACE, TritonCheckpoint
from ssmbench.impls.tuned import Tunable
from ssmbench_kernels.mamba2_replay.kernel import CheckpointKnobs

KNOBS_ENV = "SSMBENCH_BW_KNOBS"


def bw_knobs() -> CheckpointKnobs:
    """The forced knobs: the bandwidth main with $SSMBENCH_BW_KNOBS's fields."""
    fields = {f.name: f.type for f in dataclasses.fields(CheckpointKnobs)}
    given: dict = {"block_p": 64, "num_warps": 4, "max_regs": 0}
    for item in filter(None, os.environ.get(KNOBS_ENV, "").split(",")):
        name, value = item.split("=")
        if name not in fields:
            raise ValueError(f"{KNOBS_ENV}: unknown knob {name!r}")
        given[name] = value == "True" if value in ("True", "False") else int(value) if value.isdigit() else value
    return CheckpointKnobs(**{**given, "bandwidth": True, "fused": False})


class _VariantCheckpoint(TritonCheckpoint):
    """`triton.checkpoint` under another name, its knobs from ``tunable`` (fixed, its own pick changed, ...)."""

    def __init__(self, name: str, tunable: Tunable) -> None:
        self.name = name
        self.tunable = tunable


def _forced(name: str, knobs: CheckpointKnobs) -> _VariantCheckpoint:
    """`triton.checkpoint` with fixed knobs on every case (no table, no default)."""
    return _VariantCheckpoint(name, Tunable(name, CHECKPOINT_SPACE, Path(__file__).parent / "no-tables",
                                            lambda case: knobs, uses_window=True))


TILE_VARIANTS = {
    f"triton.checkpoint.tiles-p64n{nt}w4s{st}": CheckpointKnobs(
        bandwidth=True, block_p=64, n_tile=nt, num_warps=4, stages=st, rect_outputs=True)
    for nt, st in ((16, 2), (16, 4), (32, 1), (32, 2), (32, 3), (64, 1), (64, 2))
} | {
    f"triton.checkpoint.before-p64n{nt}w4s{st}": CheckpointKnobs(
        bandwidth=True, block_p=64, n_tile=nt, num_warps=4, stages=st, rect_outputs=False)
    for nt, st in ((16, 1), (16, 2), (16, 3), (16, 4), (32, 1), (32, 2), (32, 3), (64, 1), (64, 2))
}
"""64 x N state per program on one warpgroup (4 warps: Hopper's warpgroup MMA) in 16-, 32- or 64-column
tiles, 1 to 4 pipeline stages: `tiles-*` with every row's outputs from S_ckpt (`rect_outputs`), `before-*`
in the form before (session 11's rounds: tools/gpu/checkpoint-tiles*.yaml; the names of rounds 1 and 2 are
`before-*` here). 72-128 registers without spills under Triton 3.6 (static SASS, `SASS_FORMS=tiles
python3 tools/gpu/sass_replay.py`), against 255 for the whole-row 64 x 2. Pipelined 32-column tiles of the
form before and pipelined 64-column tiles fault or miscompute under Triton 3.6: kept here to reproduce it."""


PICK_VARIANTS = {
    "split": dict(split_loops=True),
    "split-r96": dict(split_loops=True, max_regs=96),
    "r64": dict(max_regs=64),
    "r80": dict(max_regs=80),
    "r0": dict(max_regs=0),
    "pre4": dict(pre_heads=4),
    "pre4w2": dict(pre_heads=4, pre_warps=2),
    "pre2": dict(pre_heads=2),
    "pre16": dict(pre_heads=16),
    "p64n32s1-r64": dict(bandwidth=True, fused=False, block_p=64, num_warps=4, n_tile=32, stages=1,
                         rect_outputs=False, max_regs=64),
    "prefetch": dict(prefetch=True),
    "prefetch-split": dict(prefetch=True, split_loops=True),
    "prefetch-pre2": dict(prefetch=True, pre_heads=2),
    "noprefetch": dict(prefetch=False),
    "pre8": dict(pre_heads=8),
    "pre16w8": dict(pre_heads=16, pre_warps=8),
    "ring": dict(ring_rows=True),
    "w1": dict(num_warps=1),
    "tma": dict(tma=True),
    "w1-tma": dict(num_warps=1, tma=True),
    "bf16form": dict(bandwidth=True, fused=False, block_p=64, num_warps=2, n_tile=32, stages=3, rect_outputs=True,
                     split_loops=False, prefetch=True, max_regs=0),
    "bf16form-w1-tma": dict(bandwidth=True, fused=False, block_p=64, num_warps=1, n_tile=32, stages=3,
                            rect_outputs=True, split_loops=False, prefetch=True, max_regs=0, tma=True),
}
"""Session 12's rounds (issue 19, tools/gpu/checkpoint-picks.yaml): the fold operands only on write rows
(`split_loops`, with and without a register cap), register caps (one wave at batch 64: 1024 programs, 8
programs of 4 warps an SM need <= 64 registers), the precompute on fewer heads a program, the state tile
into L2 before the wait (`prefetch`); `r0` / `pre16` / `noprefetch` undo what the table took from a round
before. Session 17 (round 16): one warp (the W = 16 bf16 b1024 tune's winner, -5.0%) on every bandwidth pick, the
state tiles by TMA (`tma`), both; fp32 on the bf16 picks' form (64 x 32, 3 stages, `rect_outputs`: 1-2 warps were
never timed for fp32 with it), on 2 warps and on 1 with TMA (static SASS 15.1 -> 12.2 / 9.6 instructions a state
element)."""


class _ConvFormCheckpoint(ConvChanges, TritonCheckpoint):
    """`triton.checkpoint` (its table) with other conv1d knobs than the default's in front."""


CONV_VARIANTS = {
    "c64w1": dict(block_c=64, num_warps=1),
    "c64w2": dict(block_c=64, num_warps=2),
    "c256w4": dict(block_c=256, num_warps=4),
    "c256w2": dict(block_c=256, num_warps=2),
    "loads-first": dict(loads_first=True),
    "trigger-none": dict(trigger="none"),
}
"""conv1d in front of the checkpoint chain (issue 19's third item: >= 70% of its floor from b256): shorter
programs (more of them in flight) or wider ones (more bytes a thread), timed in the chain (session 12); every input
token loaded first (`loads_first`, session 15); no PDL trigger (`trigger-none`, session 15: GDN's many-wave
conv1d lost 16 us to it, session 9)."""


register(_forced("triton.checkpoint.bw", bw_knobs()))
for _name, _changes in CONV_VARIANTS.items():
    register(_ConvFormCheckpoint(f"triton.checkpoint.conv-{_name}", **_changes))
for _name, _over in PICK_VARIANTS.items():
    _name = f"triton.checkpoint.pick+{_name}"
    register(_VariantCheckpoint(_name, pick_with(_name, TritonCheckpoint.tunable, **_over)))
# Session 14: the b64 entries at b8 / b16 / b32, the b128 entries at b256 to b1024; session 16: the b256 entries at
# b512 / b1024 (W = T bf16's one-warp winner), the b512 entries at b64 (the fp16 SR 80-register kernel under the
# sanitizer: the kernel does not specialize on the batch); session 17: the b1024 entries at b64 (the bf16 one-warp
# kernel under the sanitizer).
for _batch in (64, 128, 256, 512, 1024):
    _name = f"triton.checkpoint.as-b{_batch}"
    register(_VariantCheckpoint(_name, pick_at_batch(_name, TritonCheckpoint.tunable, _batch)))
for _name, _knobs in TILE_VARIANTS.items():
    register(_forced(_name, _knobs))
