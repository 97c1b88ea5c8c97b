"""Knob sweep behind `default_gdn_knobs` (docs/gdn.md): the GDN decode kernel alone (no conv1d) on
the Qwen3.5-397B shape, CUDA-graph replay, L2 flushed before each replay, median us per
(block_v, num_warps) setting and the best setting's state TB/s. Inputs are those of the GPU checks
(tests/gpu/test_gdn_gpu.py); timing is tools/gpu/tune_checkpoint.py's `time_chain`.

    python3 -m tools.gpu.tune_gdn > $OUT/gdn_knobs.md      (repo root, on the GPU machine)
"""

from __future__ import annotations

import functools

import torch

from ssmbench_kernels.gdn.kernel import GDNKnobs, gdn_decode
from tests.gpu.test_gdn_gpu import DEV, HV, H, K, V, _inputs
from tools.gpu.tune_checkpoint import time_chain


def _tune_row(fmt: str, T: int, inter_on: bool, final: bool, batch: int, settings, flush) -> tuple[list, int]:
    """Median us of the kernel per knob setting for one case, and the state bytes it moves."""
    c = _inputs(batch, T, fmt, seed=1, n_pad=0, n_slots=batch)
    pool = c["pool"].data
    conv_out = c["qkv"].clone()
    o = torch.empty(batch * T, HV * V, dtype=torch.bfloat16, device=DEV)
    inter = torch.empty(batch, T, HV, V, K, dtype=pool.dtype, device=DEV) if inter_on else None
    stores = (T if inter_on else 0) + (1 if final else 0)
    kw = dict(num_k_heads=H, num_v_heads=HV, head_k_dim=K, head_v_dim=V, T=T, intermediate=inter,
              write_final=final, out=o, pdl=False, validate=False)
    args = (pool, c["read"], None, conv_out, c["a"], c["b"], c["A_log"], c["dt_bias"])
    cells = [time_chain(functools.partial(gdn_decode, *args, knobs=GDNKnobs(bv, nw), **kw), flush, reps=30)
             for bv, nw in settings]
    return cells, batch * (1 + stores) * HV * V * K * pool.element_size()


def tune() -> None:
    """GDN kernel alone (no conv1d), median us per knob setting; state bytes / time as TB/s."""
    flush = torch.empty(200 * 2**20, dtype=torch.uint8, device=DEV)
    settings = [(bv, nw) for bv in (4, 8, 16, 32) for nw in (2, 4, 8)]
    configs = [  # fmt, T, intermediate, write_final, batches
        ("bf16", 1, False, True, (8, 64, 512)),
        ("fp32", 1, False, True, (64, 512)),
        ("bf16", 4, True, False, (64, 256)),
    ]
    print(f"GDN decode kernel alone, CUDA-graph replay, L2 flushed, median of 30, us ({torch.cuda.get_device_name()})")
    print("| fmt | T | inter | batch | " + " | ".join(f"v{bv}w{nw}" for bv, nw in settings) + " | best |")
    print("|" + "---|" * (5 + len(settings)))
    for fmt, T, inter_on, final, batches in configs:
        for batch in batches:
            cells, state_bytes = _tune_row(fmt, T, inter_on, final, batch, settings, flush)
            best = min(range(len(cells)), key=cells.__getitem__)
            tb = state_bytes / cells[best] / 1e6
            print(f"| {fmt} | {T} | {inter_on} | {batch} | " + " | ".join(f"{t:.1f}" for t in cells)
                  + f" | v{settings[best][0]}w{settings[best][1]} ({tb:.2f} TB/s state) |", flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    tune()
