"""Knob sweep of the checkpoint-replay kernels (precompute + main, or the fused kernel; conv1d left
out) on the headline shape: CUDA-graph replay, L2 flushed before each replay (cold), CUDA events
around the graph (they include the graph launch, ~1-2 us, so use the table to rank configs; the
numbers to quote come from `ssmbench sweep`). Prints one markdown row per case, median us.

    python3 -m tools.gpu.tune_checkpoint 8,64,256 fp32,bf16 16,6 [name-substring,...] > $OUT/tune.md
    python3 -m tools.gpu.tune_checkpoint 64,256 fp32,bf16 16 "round 1,p32 w2" > $OUT/tune.md   # a subset

Each config is checked against the fp64 reference's outputs first (y and the written checkpoints,
the `ssmbench.measure.verify` tolerances); a config that fails prints FAIL instead of a time.
"""

from __future__ import annotations

import sys

import torch

from ssmbench.families import make_workload
from ssmbench.families.common import SR_STEP
from ssmbench.families.mamba2 import replay_state
from ssmbench.measure.timer import CudaEventTimer
from ssmbench.output.stats import median
from ssmbench.spec.expand import expand
from ssmbench.spec.load import load_sweep_file
from ssmbench_kernels.mamba2_replay.kernel import CheckpointKnobs, make_scratch, replay_step

CONFIGS = {
    "fma p4 w1 (round 1)": CheckpointKnobs(dots=False, block_p=4, num_warps=1),
    "fused p16 w2": CheckpointKnobs(fused=True, block_p=16, num_warps=2, precision="tf32x3"),
    "fused p32 w2": CheckpointKnobs(fused=True, block_p=32, num_warps=2, precision="tf32x3"),
    "fused p32 w4": CheckpointKnobs(fused=True, block_p=32, num_warps=4, precision="tf32x3"),
    "fused p32 w4 r128": CheckpointKnobs(fused=True, block_p=32, num_warps=4, precision="tf32x3", max_regs=128),
    "fused p32 w4 r168": CheckpointKnobs(fused=True, block_p=32, num_warps=4, precision="tf32x3", max_regs=168),
    "fused p64 w8": CheckpointKnobs(fused=True, block_p=64, num_warps=8, precision="tf32x3"),
    "fused p64 w8 r128": CheckpointKnobs(fused=True, block_p=64, num_warps=8, precision="tf32x3", max_regs=128),
    "fused p16 w2 r128": CheckpointKnobs(fused=True, block_p=16, num_warps=2, precision="tf32x3", max_regs=128),
    "fused p32 w2 persistent": CheckpointKnobs(fused=True, block_p=32, num_warps=2, precision="tf32x3",
                                               persistent=True, programs_per_sm=8),
    # Next round's candidates (not measured yet: docs/perf-notes.md, checkpoint round 2).
    "fused p32 w2 r168": CheckpointKnobs(fused=True, block_p=32, num_warps=2, precision="tf32x3", max_regs=168),
    "fused p32 w2 r128": CheckpointKnobs(fused=True, block_p=32, num_warps=2, precision="tf32x3", max_regs=128),
    # A probe, not a candidate: one-pass TF32 fold products (2^-11 relative, outside the fp32
    # contract), to measure what the 3xTF32 fold costs (FlashInfer folds with bf16 operands).
    "fused p32 w2 tf32 probe": CheckpointKnobs(fused=True, block_p=32, num_warps=2, precision="tf32"),
}


def time_chain(chain, flush: torch.Tensor, reps: int = 40, reset=None) -> float:
    """Median us of a CUDA-graph replay of ``chain``, timed by the harness's CUDA-event timer
    (`ssmbench.measure.timer.CudaEventTimer`), with L2 flushed (and ``reset()`` run, when given, to
    put mutated buffers back) before each replay. Also used by tools/gpu/tune_gdn.py."""
    chain()  # warm (compile)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        chain()

    def prepare() -> None:
        if reset is not None:
            reset()
        flush.zero_()

    samples = CudaEventTimer(flush.device).measure(graph.replay, prepare, reps)
    return median([s.span_us for s in samples])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


def main() -> None:
    from ssmbench.measure.verify import OUT_TOL, STATE_TOL

    batches = [int(b) for b in sys.argv[1].split(",")]
    fmts = sys.argv[2].split(",")
    windows = [int(w) for w in sys.argv[3].split(",")]
    wanted = sys.argv[4].split(",") if len(sys.argv) > 4 else None
    configs = {k: v for k, v in CONFIGS.items() if wanted is None or any(w in k for w in wanted)}
    sweep = load_sweep_file("sweeps/nemotron3-super-tp8.yaml").sweeps[0]
    flush = torch.empty(2 * 50 * 2**20 // 4 * 2, device="cuda")
    print("| batch | fmt | W | " + " | ".join(configs) + " |")
    print("|---" * (3 + len(configs)) + "|")
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
        cells, ref = [], None
        for knobs in configs.values():
            kw = dict(nheads=s.nheads, head_dim=s.head_dim, dstate=s.dstate, ngroups=s.ngroups, T=case.T, y=y,
                      scratch=scratch, z=wl.z, rounding=case.rounding, seed=case.seed, step=SR_STEP, pdl=True,
                      knobs=knobs, validate=False)
            args = (rs, wl.slot_idx, conv_out, wl.dt_raw, wl.A, wl.D, wl.dt_bias)

            def chain(args=args, kw=kw) -> None:
                for launch in ("precompute", "main"):
                    replay_step(*args, launch=launch, **kw)

            def reset(saved=saved) -> None:
                for live, copy in saved:
                    live.copy_(copy)

            reset()
            y.fill_(float("nan"))
            chain()
            torch.cuda.synchronize()
            got = (y.clone(), rs.ckpt.data.float().clone())
            if ref is None:  # the first config (round 1's default, checked against fp64 in the tests)
                ref = got
            y_err, st_err = _rel(got[0], ref[0]), _rel(got[1], ref[1])
            ok = y_err <= OUT_TOL[case.act_dtype] / 4 and st_err <= STATE_TOL[case.state_dtype] / 4
            t = time_chain(chain, flush, reset=reset)
            cells.append(f"{t:.1f}" if ok else f"FAIL({t:.1f}; y {y_err:.1e} st {st_err:.1e})")
        print(f"| {case.batch} | {case.state_dtype} | {case.window} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
