"""The plugin's own kernel: the Mamba-2 per-token-state update (docs/spec.md §5) for fp32
states, one program per (row, head, block of head_dim). Deliberately plain (no PDL, no storage
formats, no draft trees): it is the example, not a fast kernel. It runs on a GPU, or on a CPU in
Triton's interpreter (TRITON_INTERPRET=1)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def example_intermediate_kernel(
    pool, slot_idx, dst, xbc, dt_raw, A, D, dt_bias, z, y,
    T: tl.constexpr, H: tl.constexpr, P: tl.constexpr, N: tl.constexpr, G: tl.constexpr,
    CONV_DIM: tl.constexpr, HAS_Z: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    pm = p < P
    nm = n < N
    m = pm[:, None] & nm[None, :]
    g = h // (H // G)
    slot = tl.load(slot_idx + b).to(tl.int64)
    state = tl.load(pool + ((slot * H + h) * P + p[:, None]) * N + n[None, :], mask=m, other=0.0)
    a_h = tl.load(A + h)
    d_h = tl.load(D + h)
    bias = tl.load(dt_bias + h)
    for t in tl.static_range(T):
        row = b * T + t
        u = tl.load(dt_raw + row * H + h).to(tl.float32) + bias
        dt = tl.where(u > 20.0, u, tl.log(1.0 + tl.exp(tl.where(u > 20.0, 0.0, u))))  # softplus, branch first
        x = tl.load(xbc + row * CONV_DIM + h * P + p, mask=pm, other=0.0).to(tl.float32)
        B = tl.load(xbc + row * CONV_DIM + H * P + g * N + n, mask=nm, other=0.0).to(tl.float32)
        C = tl.load(xbc + row * CONV_DIM + H * P + G * N + g * N + n, mask=nm, other=0.0).to(tl.float32)
        state = tl.exp(a_h * dt) * state + (dt * x)[:, None] * B[None, :]
        out = tl.sum(state * C[None, :], axis=1) + d_h * x
        if HAS_Z:
            zz = tl.load(z + row * H * P + h * P + p, mask=pm, other=0.0).to(tl.float32)
            out = out * zz * tl.sigmoid(zz)
        tl.store(y + row * H * P + h * P + p, out.to(y.dtype.element_ty), mask=pm)
        d = tl.load(dst + row).to(tl.int64)
        tl.store(pool + ((d * H + h) * P + p[:, None]) * N + n[None, :], state, mask=m)


KERNEL_NAMES = ("example_intermediate_kernel",)
"""What the launch shows up as in CUPTI (the Triton function's name)."""


def example_intermediate(pool: torch.Tensor, slot_idx: torch.Tensor, dst: torch.Tensor, xbc: torch.Tensor,
                         dt_raw: torch.Tensor, A: torch.Tensor, D: torch.Tensor, dt_bias: torch.Tensor,
                         z: torch.Tensor | None, y: torch.Tensor, *, nheads: int, head_dim: int, dstate: int,
                         ngroups: int, T: int) -> None:
    """Enqueue the kernel: reads each row's state at ``slot_idx[b]`` of ``pool`` (slots, H, P, N)
    fp32, writes the state after token t to ``dst[b, t]`` and the outputs to ``y`` (batch*T, H*P).
    ``xbc`` is the conv output (batch*T, conv_dim): x | B | C column slices. No allocation, no sync."""
    batch = slot_idx.shape[0]
    block_p = min(triton.next_power_of_2(head_dim), 32)
    grid = (batch, nheads, triton.cdiv(head_dim, block_p))
    example_intermediate_kernel[grid](
        pool, slot_idx, dst, xbc, dt_raw, A, D, dt_bias, z if z is not None else y, y,
        T=T, H=nheads, P=head_dim, N=dstate, G=ngroups, CONV_DIM=xbc.shape[1], HAS_Z=z is not None,
        BLOCK_P=block_p, BLOCK_N=triton.next_power_of_2(dstate),
    )
