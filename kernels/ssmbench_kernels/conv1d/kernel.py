"""Causal conv1d update for speculative decode (docs/spec.md §6), the front of the PDL chain (docs/spec.md §7).

Layouts
-------
- input ``xbc``: the in_proj output, a contiguous ``(batch*T, conv_dim)`` tensor (or any
  ``(batch, conv_dim, T)`` view of it). The kernel reads it through strides, so the production
  view ``x.view(batch, T, conv_dim).transpose(1, 2)`` needs no copy.
- ``conv_state``: a pool ``(n_slots, conv_dim, S)`` with ``S = d_conv - 2 + T`` (the reference's
  logical layout), **any strides**. A channel-last pool ``torch.empty(n_slots, S,
  conv_dim).transpose(1, 2)`` makes every column access coalesced along channels (the column
  form); the default row-contiguous pool lets the flat form store a block's rows as one run.
- output: always a fresh or given contiguous ``(batch*T, conv_dim)`` tensor in the activation
  dtype, so x/B/C (Mamba-2) or q/k/v (GDN) are plain column-slice views of it.

Per row b (slot ``slot_idx[b]``, ``off = k_prev[b] - 1``), token t's window is the extended
sequence ``E = conv_state[slot, :, off : off + d_conv - 1] ++ x[b, :, 0:T]`` at ``E[t : t +
d_conv]``; ``out = act(bias + sum_j w[:, j] * E[t + j])`` in fp32. The new state is
``E[1 : 1 + S]`` i.e. ``conv_state[off + 1 : off + d_conv - 1] ++ x``. Padding rows (slot < 0)
write zero outputs and touch no state.

PDL: `gdc_launch_dependents()` first thing (the consumer only reads our output after its own
`gdc_wait`; `Conv1dKnobs.trigger` drops it), weights/bias/slot/k_prev loaded before
`gdc_wait()`, the in_proj output and the conv state after it (both may be written by kernels
earlier in the stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ssmbench_kernels.common.launch import (
    is_capturing,
    launch_options,
    pdl_enabled,
    pdl_launch_dependents,
    pdl_wait,
)
from ssmbench_kernels.common.validation import check_k_prev, check_slot_range, check_unique_slots


@dataclass(frozen=True)
class Conv1dKnobs:
    """Tuning knobs of `conv1d_update_kernel` (parameters, not constants)."""

    block_c: int = 128
    """Channels per program (power of two)."""
    num_warps: int = 2
    num_stages: int = 1
    form: str = "columns"
    """How the new state rows are stored (`CONV1D_FORMS`): ``columns``, one 2-byte store per state
    column and channel (any pool strides; a warp's strided store writes each sector it touches
    partially); ``flat``, the block's rows as one contiguous run of ``block_c * (d_conv - 2 + T)``
    elements, 16-byte stores of full sectors whatever the row length. ``flat`` needs a
    row-contiguous pool; on any other the kernel falls back to ``columns``. (A third form, each
    row as a (block_c, row) tile, lost to ``flat`` everywhere on the H200 and was removed:
    docs/perf-notes.md, session 9.)"""
    trigger: str = "first"
    """With PDL, whether each program lets the dependent grid launch first thing (`CONV1D_TRIGGERS`:
    ``first``) or not at all (``none``: the dependent launches as the programs exit). Measured in
    the GDN chain (session 9): the trigger moves no overlap when conv1d runs in many waves (the
    dependents launch only once the last wave has started), yet conv1d took 59.7 us under it at
    T = 1 b512 against 43.5 us without; at one wave (b1, b8) it lets the decode kernel load its
    state during conv1d. Placing it after the stores, or launching conv1d as an ordinary kernel,
    changed nothing (both removed)."""

    loads_first: bool = False
    """Every input token of the row loaded first thing after `gdc_wait`, under the channel mask only
    (padding rows read their input too, unused), before the window and any store: the x loads then
    issue without waiting for the slot's round trip, and no token load waits behind a state or output
    store (a possible alias: one round trip a token in the column form). Else each token is loaded
    where it is used, under the row's slot mask. Session 15's measurement: docs/perf-notes.md."""

    def __post_init__(self) -> None:
        """Checked once, where the knobs are made, not on every launch. Raises ValueError."""
        if self.form not in CONV1D_FORMS:
            raise ValueError(f"Conv1dKnobs.form {self.form!r} unsupported ({', '.join(CONV1D_FORMS)})")
        if self.trigger not in CONV1D_TRIGGERS:
            raise ValueError(f"Conv1dKnobs.trigger {self.trigger!r} unsupported ({', '.join(CONV1D_TRIGGERS)})")
        if not (isinstance(self.block_c, int) and self.block_c >= 1 and self.block_c & (self.block_c - 1) == 0):
            raise ValueError(f"Conv1dKnobs.block_c {self.block_c!r} unsupported (a power of two >= 1)")


CONV1D_FORMS: tuple[str, ...] = ("columns", "flat")
"""`Conv1dKnobs.form`'s values."""
CONV1D_TRIGGERS: tuple[str, ...] = ("first", "none")
"""`Conv1dKnobs.trigger`'s values."""


def conv1d_grid(conv_dim: int, batch: int, knobs: Conv1dKnobs) -> tuple[int, int]:
    """The kernel's grid: (channel blocks, rows)."""
    return triton.cdiv(conv_dim, knobs.block_c), batch


def default_conv1d_knobs(conv_dim: int, batch: int, T: int, d_conv: int) -> Conv1dKnobs:
    """128 channels on 2 warps (a knob sweep of the column form on the H100, conv_dim 1280, T=6:
    best or within 10% of it at every batch; on the H200 512 on 4 warps was 4% faster at 10240
    channels and 36% slower at 1280). The flat form from 4 state columns up (T >= 2 at d_conv 4):
    the H200's conv1d alone at b1024, T = 6 / 4 (16- and 12-byte bf16 rows), 20.8 / 19.7 us against
    25.2 (the old row-tile form) / 33.5 (columns). At 3 columns (T = 1) the columns' three stores are
    already few: flat was equal at 1280 channels and 10% slower at 10240 (docs/perf-notes.md,
    session 9). The flat form loads its tokens first (`Conv1dKnobs.loads_first`; H200, session 15,
    one run: alone at T = 6 0.95-0.99 of the time without, in the checkpoint chain conv1d b256 7.2 ->
    6.3 us, GDN T = 4 chains 0.97-1.0); the column form does not (T = 1 alone 0.95-1.16, the GDN T = 1
    chain 1.0)."""
    del conv_dim, batch
    flat = d_conv - 2 + T >= 4
    return Conv1dKnobs(block_c=128, num_warps=2, form="flat" if flat else "columns", loads_first=flat)


@triton.jit
def _flat_update(s_base, x_base, c0, conv_dim, off, real, stride_x_c, stride_x_t,
                 T: tl.constexpr, D_CONV: tl.constexpr, BLOCK_C: tl.constexpr, F_PAD: tl.constexpr,
                 EVEN_C: tl.constexpr, LOADS_FIRST: tl.constexpr = False):
    """The flat form's state update (row-contiguous pool): the block's ``BLOCK_C`` rows of ``S``
    columns are one contiguous run of ``BLOCK_C * S`` elements from ``s_base`` (the block's first
    channel), so the new rows are written as one 1-D tile of 16-byte stores, full sectors, whatever
    ``S`` is. Flat element ``i`` is channel ``i // S``, column ``i % S``: its new value is the old
    element ``i + off + 1`` (the kept window columns, a shifted load of bytes this program's window
    loads just brought into L1) or the input column ``i % S - (D_CONV - 2)``. The caller has loaded
    the window columns (the outputs' operands) before; the barrier orders every thread's loads of
    the block before any thread's store into it."""
    S: tl.constexpr = D_CONV - 2 + T
    offs_f = tl.arange(0, F_PAD)
    ch = offs_f // S
    col = offs_f % S
    in_block = offs_f < BLOCK_C * S  # constexpr bound: keeps 16-byte vectors (masks of runs of 16)
    if not EVEN_C:
        in_block = in_block & (c0 + ch < conv_dim)
    mask = in_block & real
    kept = tl.load(s_base + offs_f + off + 1, mask=mask & (col < D_CONV - 2), other=0.0)
    x_mask = in_block if LOADS_FIRST else mask  # LOADS_FIRST: not waiting for the slot
    x_col = tl.load(x_base + (c0 + ch).to(tl.int64) * stride_x_c + (col - (D_CONV - 2)) * stride_x_t,
                    mask=x_mask & (col >= D_CONV - 2), other=0.0)
    new = tl.where(col < D_CONV - 2, kept, x_col.to(s_base.dtype.element_ty))
    tl.debug_barrier()
    tl.store(s_base + offs_f, new, mask=mask)


@triton.jit
def _conv_row(x_ptr, state_ptr, out_ptr, row, slot, off, offs_c, mask_c, w0, w1, w2, w3, bias, conv_dim,
              stride_x_b, stride_x_c, stride_x_t, stride_s_slot, stride_s_c, stride_s_k, stride_out_row,
              T: tl.constexpr, D_CONV: tl.constexpr, SILU: tl.constexpr, BLOCK_C: tl.constexpr,
              FLAT: tl.constexpr, F_PAD: tl.constexpr, EVEN_C: tl.constexpr, LOADS_FIRST: tl.constexpr):
    """One row's BLOCK_C channels: window loads, the new state (flat or column form), T outputs
    (``LOADS_FIRST``: `Conv1dKnobs.loads_first`)."""
    real = slot >= 0
    mask_s = mask_c & ((offs_c * 0 + slot) >= 0)  # tensor comparison: interpreter-safe mask
    x_base = x_ptr + row * stride_x_b
    x_row = x_base + offs_c.to(tl.int64) * stride_x_c
    tokens = ()
    if LOADS_FIRST:
        for t in tl.static_range(T):
            tokens = tokens + (tl.load(x_row + t * stride_x_t, mask=mask_c, other=0.0),)
    s_base = state_ptr + slot * stride_s_slot
    s_row = s_base + offs_c.to(tl.int64) * stride_s_c
    # Window columns off .. off + D_CONV - 2 of the state; h2 is the newest (E[D_CONV - 2]).
    h2 = tl.load(s_row + (off + D_CONV - 2) * stride_s_k, mask=mask_s, other=0.0)
    h1 = h2
    h0 = h2
    if D_CONV >= 3:
        h1 = tl.load(s_row + (off + D_CONV - 3) * stride_s_k, mask=mask_s, other=0.0)
    if D_CONV >= 4:
        h0 = tl.load(s_row + (off + D_CONV - 4) * stride_s_k, mask=mask_s, other=0.0)
    if FLAT:
        c0 = tl.program_id(0) * BLOCK_C
        # A splat, not the scalar `real`: keeps the mask's runs (16-byte stores) and the interpreter's dtype.
        real_f = (tl.zeros([F_PAD], tl.int64) + slot) >= 0
        _flat_update(s_base + c0 * (D_CONV - 2 + T), x_base, c0, conv_dim, off, real_f, stride_x_c, stride_x_t,
                     T, D_CONV, BLOCK_C, F_PAD, EVEN_C, LOADS_FIRST)
    else:
        # New state, head: conv_state[off + 1 : off + D_CONV - 1] (all loaded above, so in place is safe).
        if D_CONV == 3:
            tl.store(s_row, h2, mask=mask_s)
        if D_CONV == 4:
            tl.store(s_row, h1, mask=mask_s)
            tl.store(s_row + stride_s_k, h2, mask=mask_s)

    f0 = h0.to(tl.float32)
    f1 = h1.to(tl.float32)
    f2 = h2.to(tl.float32)
    out_row = out_ptr + (row * T) * stride_out_row + offs_c
    for t in tl.static_range(T):
        if LOADS_FIRST:
            xt = tokens[t]
        else:
            xt = tl.load(x_row + t * stride_x_t, mask=mask_s, other=0.0)
        if not FLAT:
            tl.store(s_row + (D_CONV - 2 + t) * stride_s_k, xt.to(state_ptr.dtype.element_ty), mask=mask_s)
        xf = xt.to(tl.float32)
        if D_CONV == 2:
            acc = bias + w0 * f2 + w1 * xf
        elif D_CONV == 3:
            acc = bias + w0 * f1 + w1 * f2 + w2 * xf
        else:
            acc = bias + w0 * f0 + w1 * f1 + w2 * f2 + w3 * xf
        if SILU:
            acc = acc * tl.sigmoid(acc)
        acc = tl.where(real, acc, 0.0)
        tl.store(out_row + t * stride_out_row, acc.to(out_ptr.dtype.element_ty), mask=mask_c)
        f0 = f1
        f1 = f2
        f2 = xf


@triton.jit
def conv1d_update_kernel(
    x_ptr,
    state_ptr,
    w_ptr,
    bias_ptr,
    slot_ptr,
    kprev_ptr,
    out_ptr,
    conv_dim,
    stride_x_b,
    stride_x_c,
    stride_x_t,
    stride_s_slot,
    stride_s_c,
    stride_s_k,
    stride_w_c,
    stride_w_k,
    stride_out_row,
    T: tl.constexpr,
    D_CONV: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr,
    BLOCK_C: tl.constexpr,
    PDL: tl.constexpr,
    FLAT: tl.constexpr,
    F_PAD: tl.constexpr,
    EVEN_C: tl.constexpr,
    TRIGGER: tl.constexpr = True,
    LOADS_FIRST: tl.constexpr = False,
):
    """Grid ``(cdiv(conv_dim, BLOCK_C), batch)``; one program = BLOCK_C channels of one row (several
    rows a program lost at T = 1 on the H200, session 10: docs/perf-notes.md). ``FLAT``:
    `Conv1dKnobs.form` ``flat`` (only on a row-contiguous pool, ``stride_s_c == S`` and
    ``stride_s_k == 1``), else ``columns``."""
    pdl_launch_dependents(PDL and TRIGGER)
    pid_c = tl.program_id(0)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < conv_dim
    row = tl.program_id(1).to(tl.int64)
    slot = tl.load(slot_ptr + row).to(tl.int64)
    off = (tl.load(kprev_ptr + row) - 1).to(tl.int64)

    # Weights: w0..w3 multiply E[t], E[t+1], ...; only the first D_CONV exist.
    w_row = w_ptr + offs_c.to(tl.int64) * stride_w_c
    w0 = tl.load(w_row, mask=mask_c, other=0.0).to(tl.float32)
    w1 = tl.load(w_row + stride_w_k, mask=mask_c, other=0.0).to(tl.float32)
    w2 = w1 * 0.0
    w3 = w1 * 0.0
    if D_CONV >= 3:
        w2 = tl.load(w_row + 2 * stride_w_k, mask=mask_c, other=0.0).to(tl.float32)
    if D_CONV >= 4:
        w3 = tl.load(w_row + 3 * stride_w_k, mask=mask_c, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    else:
        bias = w0 * 0.0

    pdl_wait(PDL)

    _conv_row(x_ptr, state_ptr, out_ptr, row, slot, off, offs_c, mask_c, w0, w1, w2, w3, bias, conv_dim,
              stride_x_b, stride_x_c, stride_x_t, stride_s_slot, stride_s_c, stride_s_k, stride_out_row,
              T, D_CONV, SILU, BLOCK_C, FLAT, F_PAD, EVEN_C, LOADS_FIRST)


KERNEL_NAMES: tuple[str, ...] = (conv1d_update_kernel.fn.__name__,)
"""Kernel names `conv1d_update` launches, for CUPTI attribution."""


def validate_conv1d_inputs(
    conv_state: torch.Tensor, slot_idx: torch.Tensor, k_prev: torch.Tensor, T: int
) -> None:
    """Host-side checks that need the index values (one device sync): distinct real slots, slots
    in range, ``1 <= k_prev <= T``. Raises ValueError."""
    check_unique_slots(slot_idx, "slot_idx")
    check_slot_range(slot_idx, conv_state.shape[0], "slot_idx")
    check_k_prev(k_prev, slot_idx, T)


def conv1d_update(
    xbc: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    slot_idx: torch.Tensor,
    k_prev: torch.Tensor,
    *,
    T: int,
    out: torch.Tensor | None = None,
    activation: str | None = "silu",
    pdl: bool = False,
    knobs: Conv1dKnobs | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Run the conv1d update in place on ``conv_state``; returns ``out`` (batch*T, conv_dim).

    xbc: ``(batch*T, conv_dim)`` (contiguous in_proj output) or a ``(batch, conv_dim, T)`` view;
    conv_state: ``(n_slots, conv_dim, d_conv - 2 + T)`` any strides, updated in place;
    weight: ``(conv_dim, d_conv)``, d_conv in 2..4; bias: ``(conv_dim,)`` or None;
    slot_idx, k_prev: ``(batch,)`` int (slot < 0: padding row); out: optional preallocated
    contiguous ``(batch*T, conv_dim)`` in the activation dtype (no allocation when given).

    ``validate`` syncs with the device to check the index values (`validate_conv1d_inputs`); it
    is skipped automatically during CUDA-graph capture. Pass False in timed loops: the checks
    launch torch kernels that would also sit between PDL-chained kernels.
    """
    if xbc.dim() == 2:
        if xbc.shape[0] % T:
            raise ValueError(f"xbc has {xbc.shape[0]} rows, not a multiple of T={T}")
        batch, conv_dim = xbc.shape[0] // T, xbc.shape[1]
        x3 = xbc.view(batch, T, conv_dim).transpose(1, 2)
    elif xbc.dim() == 3:
        batch, conv_dim = xbc.shape[0], xbc.shape[1]
        if xbc.shape[2] != T:
            raise ValueError(f"xbc is (batch, conv_dim, {xbc.shape[2]}), expected T={T} columns")
        x3 = xbc
    else:
        raise ValueError(f"xbc must be (batch*T, conv_dim) or (batch, conv_dim, T), got {tuple(xbc.shape)}")
    d_conv = weight.shape[-1]
    if not 2 <= d_conv <= 4:
        raise ValueError(f"d_conv={d_conv} unsupported (2..4)")
    if weight.shape != (conv_dim, d_conv):
        raise ValueError(f"weight must be (conv_dim={conv_dim}, d_conv), got {tuple(weight.shape)}")
    if conv_state.dim() != 3 or conv_state.shape[1] != conv_dim or conv_state.shape[2] != d_conv - 2 + T:
        raise ValueError(
            f"conv_state must be (n_slots, {conv_dim}, d_conv-2+T={d_conv - 2 + T}), "
            f"got {tuple(conv_state.shape)}"
        )
    if bias is not None and bias.shape != (conv_dim,):
        raise ValueError(f"bias must be ({conv_dim},), got {tuple(bias.shape)}")
    if slot_idx.shape != (batch,) or k_prev.shape != (batch,):
        raise ValueError(f"slot_idx and k_prev must be ({batch},)")
    if activation not in ("silu", None):
        raise ValueError(f"activation {activation!r} unsupported (silu or None)")
    if out is None:
        out = torch.empty(batch * T, conv_dim, dtype=xbc.dtype, device=xbc.device)
    elif out.shape != (batch * T, conv_dim) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous ({batch * T}, {conv_dim}) tensor")
    if validate and not is_capturing():
        validate_conv1d_inputs(conv_state, slot_idx, k_prev, T)
    if batch == 0:
        return out

    knobs = knobs or default_conv1d_knobs(conv_dim, batch, T, d_conv)
    width = d_conv - 2 + T
    row_contiguous = conv_state.stride(2) == 1 and conv_state.stride(1) == width
    use_pdl = pdl_enabled(pdl, xbc.device)
    grid = conv1d_grid(conv_dim, batch, knobs)
    conv1d_update_kernel[grid](
        x3,
        conv_state,
        weight,
        bias if bias is not None else weight,
        slot_idx,
        k_prev,
        out,
        conv_dim,
        x3.stride(0),
        x3.stride(1),
        x3.stride(2),
        conv_state.stride(0),
        conv_state.stride(1),
        conv_state.stride(2),
        weight.stride(0),
        weight.stride(1),
        out.stride(0),
        T=T,
        D_CONV=d_conv,
        HAS_BIAS=bias is not None,
        SILU=activation == "silu",
        BLOCK_C=knobs.block_c,
        PDL=use_pdl,
        FLAT=knobs.form == "flat" and row_contiguous,
        F_PAD=triton.next_power_of_2(knobs.block_c * width),
        EVEN_C=conv_dim % knobs.block_c == 0,
        TRIGGER=knobs.trigger == "first",
        LOADS_FIRST=knobs.loads_first,
        **launch_options(use_pdl, knobs.num_warps, knobs.num_stages),
    )
    return out
