"""Byte models (docs/spec.md §10): the unique bytes a kernel of a chain must move, per case.

Every tensor region a kernel reads or writes counts once per kernel that touches it; parameters
broadcast to all rows count once; padding rows read no state and write zero outputs. The models
are checked against ncu's measured DRAM bytes by `ssmbench validate-bytes` (docs/profile.md).
A region is counted at the granularity DRAM moves it (32-byte sectors) where a kernel's reads
are narrower than a sector: see `conv1d_bytes`.
"""

from __future__ import annotations

from ssmbench.case import Case
from ssmbench.workload import ACT_DTYPES
from ssmbench_kernels.storage.reference import SCALED_FORMATS, bytes_per_element

INDEX_BYTES = 8
DRAM_SECTOR_BYTES = 32


def act_bytes(case: Case) -> int:
    return ACT_DTYPES[case.act_dtype].itemsize


def real_rows(case: Case, workload) -> int:
    """Rows that are not padding (from the workload when given, else all rows)."""
    if workload is None:
        return case.batch
    return int((workload.read_slots >= 0).sum())


def state_bytes(fmt: str, rows: int, row_len: int) -> int:
    """One state of ``rows`` rows of ``row_len`` values in ``fmt`` (plus fp32 per-row scales)."""
    scale = 4 * rows if fmt in SCALED_FORMATS else 0
    return rows * row_len * bytes_per_element(fmt) + scale


def conv_window_read_bytes(act: int, d_conv: int, T: int) -> int:
    """Bytes DRAM moves per channel to read the d_conv-1 window columns out of a channel's
    d_conv-2+T contiguous state columns: the window starts at a data-dependent offset, so a
    window narrower than a sector drags its whole sector(s) along. With bf16 and T=6 a channel's
    row is 16 bytes, so the whole row is read (measured by ncu on an H100: docs/profile.md)."""
    row = (d_conv - 2 + T) * act
    window = (d_conv - 1) * act
    sectors = -(-window // DRAM_SECTOR_BYTES) + 1  # the window may straddle a sector boundary
    return min(row, sectors * DRAM_SECTOR_BYTES)


def conv1d_bytes(case: Case, conv_dim: int, d_conv: int, has_bias: bool, n_real: int) -> int:
    """conv1d update: read x (all rows) and the window columns (`conv_window_read_bytes`), write
    d_conv-2+T state columns (real rows), write the output (all rows, zeros for padding),
    weights once."""
    act, T, b = act_bytes(case), case.T, case.batch
    per_real = conv_dim * (conv_window_read_bytes(act, d_conv, T) + act * (d_conv - 2 + T))
    all_rows = b * (2 * T * conv_dim * act + 2 * INDEX_BYTES)
    params = conv_dim * d_conv * act + (conv_dim * act if has_bias else 0)
    return n_real * per_real + all_rows + params


def mamba2_intermediate_bytes(case: Case, n_real: int) -> int:
    """Per-token-state kernel: read one state and write T states per real row; read x, B, C, dt
    (and z), write y for every row; A, D, dt_bias once; src and dst indices."""
    s, act, T, b = case.shape, act_bytes(case), case.T, case.batch
    one_state = state_bytes(case.state_dtype, s.nheads * s.head_dim, s.dstate)
    inputs = T * (s.nheads * s.head_dim + 2 * s.ngroups * s.dstate + s.nheads) * act
    z = T * s.nheads * s.head_dim * act if case.option("z_gate") else 0
    y = T * s.nheads * s.head_dim * act
    return n_real * (1 + T) * one_state + b * (inputs + z + y + (1 + T) * INDEX_BYTES) + 3 * s.nheads * 4


def gdn_bytes(case: Case, n_real: int) -> int:
    """GDN chain (docs/spec.md §9): conv1d (no bias) then the decode kernel, which per real row reads one
    state and writes T per-token states (``intermediate``) and/or one final state
    (``write_final``), and reads its q, k, v, a, b; writes o for every row (zeros for padding);
    A_log and dt_bias once; read (and write) indices for every row."""
    s, act, T, b = case.shape, act_bytes(case), case.T, case.batch
    one_state = state_bytes(case.state_dtype, s.num_v_heads * s.head_v_dim, s.head_k_dim)
    write_final = bool(case.option("write_final", True))
    stores = (T if case.option("intermediate", False) else 0) + (1 if write_final else 0)
    inputs = T * (s.conv_dim + 2 * s.num_v_heads) * act
    o = T * s.num_v_heads * s.head_v_dim * act
    indices = (2 if write_final else 1) * INDEX_BYTES
    decode = n_real * ((1 + stores) * one_state + inputs) + b * (o + indices) + 2 * s.num_v_heads * 4
    return conv1d_bytes(case, s.conv_dim, s.d_conv, False, n_real) + decode


def mamba2_checkpoint_fused_bytes(case: Case, n_rows: int, pnat_real: list[int]) -> int:
    """Checkpoint replay in one kernel (docs/spec.md §7's conv1d -> main variant; conv1d not included): no
    coefficients handed between kernels. Per real row: indices and bookkeeping, the checkpoint,
    pnat history rows of x, B (per group) and processed dt (per head; every row needs them: the
    outputs come from the old checkpoint), this step's x, B, C, dt (and z); writes the checkpoint
    (write rows, pnat + T > W) and appends T rows of x, B and dt. y for every row (zeros for
    padding), slot indices for every row, A, dt_bias, D once."""
    s, act, T, W = case.shape, act_bytes(case), case.T, case.window
    H, P, N, G = s.nheads, s.head_dim, s.dstate, s.ngroups
    one_state = state_bytes(case.state_dtype, H * P, N)
    x_tok, bc_tok, dt_hist = H * P * act, G * N * act, H * 4
    total = n_rows * INDEX_BYTES + 3 * H * 4 + n_rows * T * x_tok  # slots, params, y
    for p in pnat_real:
        row = 2 * INDEX_BYTES + one_state + p * (x_tok + bc_tok + dt_hist)
        row += T * (x_tok + 2 * bc_tok + H * act)  # this step's x, B, C, dt
        row += T * (x_tok + bc_tok + dt_hist)  # history appends
        if p + T > W:
            row += one_state
        if case.option("z_gate"):
            row += T * x_tok
        total += row
    return total


def mamba2_checkpoint_bytes(case: Case, n_rows: int, pnat_real: list[int]) -> int:
    """Checkpoint replay (docs/spec.md §5) in two kernels, precompute + main (conv1d not included), summed row by row
    from each real row's pnat (``pnat_real``; write rows are those with pnat + T > W).

    precompute, per real row: indices and bookkeeping, pnat history dt (per head) and B (per
    group), this step's dt, B, C; writes the coefficients (CB T x (W+T), T decays, W fold
    weights, one fold decay per head; written for padding rows too) and appends T rows of dt and
    B. main, per real row: indices and bookkeeping, the checkpoint, pnat history x (and B on
    write rows), this step's x, C (and z), the coefficients it uses (nowrite: CB over pnat + T
    columns and T decays; write: CB over T columns, T decays, pnat fold weights, the fold decay),
    D once; writes the checkpoint (write rows), y (every row, zeros for padding) and appends T
    rows of x. Slot indices are read by every row of both kernels; A, dt_bias, D once.
    """
    s, act, T, W = case.shape, act_bytes(case), case.T, case.window
    H, P, N, G = s.nheads, s.head_dim, s.dstate, s.ngroups
    one_state = state_bytes(case.state_dtype, H * P, N)
    x_tok, bc_tok = H * P * act, G * N * act
    coef = H * 4 * (T * (W + T) + T + W + 1)
    total = 2 * n_rows * INDEX_BYTES + n_rows * coef + 3 * H * 4 + n_rows * T * x_tok  # y
    for p in pnat_real:
        write = p + T > W
        pre = 2 * INDEX_BYTES + p * (H * 4 + bc_tok) + T * (H * act + 2 * bc_tok) + T * (H * 4 + bc_tok)
        used = H * 4 * (T * T + T + ((p + 1) if write else T * p))
        main = 2 * INDEX_BYTES + one_state + p * x_tok + T * (x_tok + G * N * act) + used + T * x_tok
        if write:
            main += p * bc_tok + one_state
        if case.option("z_gate"):
            main += T * x_tok
        total += pre + main
    return total
