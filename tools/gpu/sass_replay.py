"""SASS of the checkpoint-replay kernels at the headline shape (H16 P64 N128 G1, T = 6, W = 16),
compiled for sm_90 on a machine WITHOUT a GPU (sass_mix.py's stand-in driver;
nothing is launched): per kernel form, static instructions (integer / float / memory), registers,
stack (spills) and shared memory, and
instructions per state element a thread moves (the program's BLOCK_P x N state tile over its
threads). Static counts hold both the write and the nowrite path, and a loop body once.
Registers and stack (spills) from cuobjdump -res-usage (the bundled ptxas -v rejects Triton 3.9's
PTX version), shared memory = Triton's dynamic allocation + the static one.

    PYTHONPATH=$PWD:$PWD/kernels python3 tools/gpu/sass_replay.py [fp32,bf16,fp16sr]
    (SASS_FORMS=tiles: the column-tile forms; SASS_FORMS=tma: the table's picks with and without TMA)

Used for docs/checkpoint.md (issue 19): compare main-kernel designs without device time.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: compile, do not interpret
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import triton  # noqa: E402
from sass_mix import CLASSES, DTYPES, Compiled, StandInDriver, opcode_counts  # noqa: E402
from triton.runtime import driver  # noqa: E402

H, P, N, G, T, W = 16, 64, 128, 1, 6, 16
BATCH = 64
"""Rows of the compiled call: the kernels do not specialize on the batch (batch 64
and 1024 give the same SASS), and 64 keeps the host tensors small (the fp32 pool is 34 MB)."""
MEMORY = ("LDG", "STG", "LDS", "STS", "LDGSTS", "LDSM", "UTMALDG", "UBLKCP", "ATOM", "RED")


@dataclass(frozen=True)
class Form:
    """One kernel to compile: its knobs, which launch of `replay_step` builds it, and the state
    tile (rows x N) a program moves, for the per-element figure (0: no state)."""

    label: str
    knobs: dict
    launch: str
    tile_rows: int
    threads: int


def forms() -> list[Form]:
    return [
        Form("fused p32 w2 tf32x3 (default W=16)", dict(fused=True, block_p=32, num_warps=2, precision="tf32x3"),
             "main", 32, 64),
        Form("rank-1 main p4 w1 (default W=T b>=64)", dict(block_p=4, num_warps=1), "main", 4, 32),
        Form("precompute 1 head w2 (session 7)", dict(pre_heads=1, pre_warps=2), "precompute", 0, 64),
        Form("precompute 16 heads w4 (default)", dict(pre_heads=16, pre_warps=4), "precompute", 0, 128),
        Form("bandwidth main p16 w4", dict(bandwidth=True, block_p=16, num_warps=4), "main", 16, 128),
        Form("bandwidth main p32 w4", dict(bandwidth=True, block_p=32, num_warps=4), "main", 32, 128),
        Form("bandwidth main p64 w4", dict(bandwidth=True, block_p=64, num_warps=4), "main", 64, 128),
        Form("bandwidth main p32 w2 (H200 table fp32)", dict(bandwidth=True, block_p=32, num_warps=2), "main", 32, 64),
        Form("bandwidth main p64 w2 (H200 table bf16)", dict(bandwidth=True, block_p=64, num_warps=2), "main", 64, 64),
        Form("bandwidth main p64 w4 r128", dict(bandwidth=True, block_p=64, num_warps=4, max_regs=128), "main", 64,
             128),
        Form("bandwidth main p64 w8", dict(bandwidth=True, block_p=64, num_warps=8), "main", 64, 256),
    ]


def tile_forms() -> list[Form]:
    """The bandwidth main with the state streamed in column tiles (`CheckpointKnobs.n_tile`,
    session 11): the H200 table's W = 16 picks (fp32 64 x 32, 1 stage; bf16 64 x 32, 3 stages,
    `rect_outputs`; fp16 SR 64 x 16, 3 stages), each in one tile loop and in two (`split_loops`,
    session 12); "per elem" counts one tile."""
    out = []
    for nt, st, rect in ((32, 1, False), (32, 3, True), (16, 3, False)):
        for split in (False, True):
            out.append(Form(f"tiles p64 n{nt} w4 s{st}{' rect' if rect else ''}{' split' if split else ''}",
                            dict(bandwidth=True, block_p=64, num_warps=4, n_tile=nt, stages=st, rect_outputs=rect,
                                 split_loops=split), "main", 64, 128))
    return out


def tma_forms() -> list[Form]:
    """The H200 table's bandwidth-main picks with and without `CheckpointKnobs.tma` (session 17): fp32 b256 (64 x 32,
    4 warps, 1 stage, 64 registers), bf16 b128-b1024 (64 x 32, 3 stages, `rect_outputs`, `prefetch`; 2 warps and
    the b1024 tune's 1 warp), fp16 SR b64 (64 x 16, 3 stages)."""
    picks = (("fp32 p64 n32 w4 s1 r64", dict(block_p=64, num_warps=4, n_tile=32, stages=1, max_regs=64), 128),
             ("bf16 p64 n32 w2 s3 rect", dict(block_p=64, num_warps=2, n_tile=32, stages=3, rect_outputs=True,
                                              prefetch=True), 64),
             ("bf16 p64 n32 w1 s3 rect", dict(block_p=64, num_warps=1, n_tile=32, stages=3, rect_outputs=True,
                                              prefetch=True), 32),
             ("fp16 p64 n16 w4 s3", dict(block_p=64, num_warps=4, n_tile=16, stages=3, prefetch=True), 128))
    return [Form(f"{label}{' tma' if tma else ''}", dict(bandwidth=True, tma=tma, **knobs), "main", 64, threads)
            for label, knobs, threads in picks for tma in (False, True)]


def compile_form(form: Form, fmt: str, rounding: str, cache: str) -> str:
    """Compile one kernel of `replay_step` into ``cache``; returns the cache directory of it."""
    from ssmbench_kernels.mamba2_replay.kernel import CheckpointKnobs, make_scratch, replay_step
    from ssmbench_kernels.mamba2_replay.reference import new_replay_state
    from ssmbench_kernels.storage.reference import quantize

    os.environ["TRITON_CACHE_DIR"] = cache
    slots = BATCH + 1
    ckpt = quantize(torch.zeros(slots, H, P, N), fmt)
    rs = new_replay_state(ckpt, T, W, G, act_dtype=torch.bfloat16, dt_dtype=torch.float32)
    act = dict(dtype=torch.bfloat16)
    rows = BATCH * T
    try:
        replay_step(rs, torch.arange(BATCH), torch.zeros(rows, H * P + 2 * G * N, **act), torch.zeros(rows, H, **act),
                    torch.zeros(H), torch.zeros(H), torch.zeros(H), nheads=H, head_dim=P, dstate=N, ngroups=G, T=T,
                    y=torch.zeros(rows, H * P, **act), scratch=make_scratch(BATCH, H, T, W, "cpu"),
                    z=torch.zeros(rows, H * P, **act), rounding=rounding, knobs=CheckpointKnobs(**form.knobs),
                    validate=False, launch=form.launch)
    except Compiled:
        pass
    return os.path.dirname(glob.glob(f"{cache}/**/*.cubin", recursive=True)[0])


def resources(kdir: str) -> tuple[int, int, int]:
    """(registers, stack bytes: spills show here, shared memory bytes) of the compiled kernel:
    cuobjdump -res-usage on Triton's cubin, and Triton's dynamic shared memory from its metadata."""
    cubin = glob.glob(f"{kdir}/*.cubin")[0]
    with open(next(p for p in glob.glob(f"{kdir}/*.json") if not os.path.basename(p).startswith("__grp__"))) as f:
        meta = json.load(f)
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    out = subprocess.run([cuobjdump, "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
    usage = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)", out)
    return int(usage.group(1)), int(usage.group(2)), int(meta.get("shared", 0)) + int(usage.group(3))


def main(labels: list[str]) -> None:
    driver.set_active(StandInDriver())
    print(f"H{H} P{P} N{N} G{G} T={T} W={W}, sm_90 (Triton {triton.__version__}); static SASS")
    print(f"{'fmt':7} {'kernel':38} {'total':>6} {'int':>5} {'float':>5} {'mem':>4} {'regs':>4} {'stack':>5} "
          f"{'smem':>6} {'per elem':>8}")
    for label in labels:
        fmt, rounding = (label[:-2], "sr") if label.endswith("sr") else (label, "rn")
        if fmt not in DTYPES:
            raise SystemExit(f"unknown format {label!r}: one of {', '.join(DTYPES)} (+ 'sr')")
        chosen = {"tiles": tile_forms, "tma": tma_forms}.get(os.environ.get("SASS_FORMS", ""), forms)
        for form in chosen():
            if form.launch == "precompute" and label != labels[0]:
                continue  # the precompute does not depend on the state format
            kdir = compile_form(form, fmt, rounding, tempfile.mkdtemp())
            ops = opcode_counts(glob.glob(f"{kdir}/*.cubin")[0])
            total = sum(ops.values())
            kinds = {c: sum(n for op, n in ops.items() if op in names) for c, names in CLASSES.items()}
            mem = sum(n for op, n in ops.items() if op in MEMORY)
            regs, stack, smem = resources(kdir)
            per = f"{total / (form.tile_rows * N / form.threads):8.1f}" if form.tile_rows else f"{'-':>8}"
            print(f"{label:7} {form.label:38} {total:6d} {kinds['int']:5d} {kinds['float']:5d} {mem:4d} {regs:4d} "
                  f"{stack:5d} {smem:6d} {per}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else ["fp32", "bf16"])
