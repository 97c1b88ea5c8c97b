"""Knob sweep of the checkpoint-replay kernels (precompute + main, conv1d left out) on the headline
shape: CUDA-graph replay, L2 flushed before each replay (cold), CUDA events around the graph
(includes the graph launch, so only the ranking matters). Prints one markdown row per config.

    python3 tests/gpu/tune_checkpoint.py 8,64,256,1024 fp32,bf16 16,6 > $OUT/tune.md
"""

from __future__ import annotations

import sys

import torch

from kernels.triton.checkpoint import CheckpointKnobs, make_scratch, replay_step
from ssmbench.expand import expand
from ssmbench.impls.reference import SR_STEP, replay_state
from ssmbench.spec import load_sweep_file
from ssmbench.workload import make_workload

CONFIGS = {
    "dot p16 w4": CheckpointKnobs(dots=True, block_p=16, num_warps=4),
    "fma p4 w1": CheckpointKnobs(dots=False, block_p=4, num_warps=1),
    "fma p8 w1": CheckpointKnobs(dots=False, block_p=8, num_warps=1),
    "fma p8 w2": CheckpointKnobs(dots=False, block_p=8, num_warps=2),
    "fma p16 w2": CheckpointKnobs(dots=False, block_p=16, num_warps=2),
    "fma p4 w1 persistent": CheckpointKnobs(dots=False, block_p=4, num_warps=1, persistent=True,
                                            programs_per_sm=16),
    "fma p8 w2 persistent": CheckpointKnobs(dots=False, block_p=8, num_warps=2, persistent=True, programs_per_sm=8),
}


def main() -> None:
    batches = [int(b) for b in sys.argv[1].split(",")]
    fmts = sys.argv[2].split(",")
    windows = [int(w) for w in sys.argv[3].split(",")]
    sweep = load_sweep_file("sweeps/nemotron3-super-tp8.yaml").sweeps[0]
    flush = torch.empty(2 * 50 * 2**20 // 4 * 2, device="cuda")
    print("| batch | fmt | W | " + " | ".join(CONFIGS) + " |")
    print("|---" * (3 + len(CONFIGS)) + "|")
    for case in expand(sweep).cases:
        if (case.batch not in batches or case.state_dtype not in fmts or case.window not in windows
                or case.rounding != "rn"):
            continue
        wl = make_workload(case, "cuda")
        s = wl.shape
        rs = replay_state(case, wl)
        saved = [(t, t.clone()) for t in (rs.ckpt.data, rs.ckpt.scale, rs.hist_x, rs.hist_B, rs.hist_dt)
                 if t is not None]
        conv_out = wl.xbc.clone()
        y = torch.empty(case.batch * case.T, s.nheads * s.head_dim, dtype=wl.xbc.dtype, device="cuda")
        scratch = make_scratch(case.batch, s.nheads, case.T, case.window, "cuda")
        cells = []
        for knobs in CONFIGS.values():
            kw = dict(nheads=s.nheads, head_dim=s.head_dim, dstate=s.dstate, ngroups=s.ngroups, T=case.T, y=y,
                      scratch=scratch, z=wl.z, rounding=case.rounding, seed=case.seed, step=SR_STEP, pdl=True,
                      knobs=knobs, validate=False)
            args = (rs, wl.slot_idx, conv_out, wl.dt_raw, wl.A, wl.D, wl.dt_bias)

            def chain(args=args, kw=kw) -> None:
                for launch in ("precompute", "main"):
                    replay_step(*args, launch=launch, **kw)
            chain()
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                chain()
            times = []
            for _ in range(30):
                for live, copy in saved:
                    live.copy_(copy)
                flush.zero_()
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                graph.replay()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) * 1000)
            cells.append(f"{sorted(times)[15]:.1f}")
        print(f"| {case.batch} | {case.state_dtype} | {case.window} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
