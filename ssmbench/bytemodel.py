"""Byte models (SPEC 10): the unique bytes a kernel of a chain must move, per case.

Every tensor region a kernel reads or writes counts once per kernel that touches it; parameters
broadcast to all rows count once; padding rows read no state and write zero outputs. The models
are checked against ncu's measured DRAM bytes by `ssmbench validate-bytes` (a later issue).
"""

from __future__ import annotations

from kernels.reference.storage import SCALED_FORMATS, bytes_per_element
from ssmbench.case import Case
from ssmbench.workload import ACT_DTYPES

INDEX_BYTES = 8


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


def conv1d_bytes(case: Case, conv_dim: int, d_conv: int, has_bias: bool, n_real: int) -> int:
    """conv1d update: read x (all rows) and the d_conv-1 window columns, write d_conv-2+T state
    columns (real rows), write the output (all rows, zeros for padding), weights once."""
    act, T, b = act_bytes(case), case.T, case.batch
    per_real = conv_dim * act * ((d_conv - 1) + (d_conv - 2 + T))
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
