"""The one `tl.dot` helper every ssmbench Triton kernel goes through.

Why: the Triton interpreter (``TRITON_INTERPRET=1``, used by CI on CPU) multiplies the raw bit
patterns of bf16 operands in ``tl.dot`` (triton-lang/triton#11584; upstream: bf16 is unsupported
there), which silently produces garbage. Under the interpreter the operands are upcast to fp32
first (exact: every bf16/fp16 value is an fp32 value), so CPU results equal the GPU's
fp32-accumulated MMA up to summation order. On the GPU the operands go to the tensor cores
untouched.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ssmbench_kernels.common.launch import INTERPRET


@triton.jit
def dot(a, b, acc):
    """``acc + a @ b`` with fp32 accumulation; fp32 operands use exact ("ieee") products, not
    TF32 (bf16/fp16 operands go to the tensor cores in their own precision)."""
    if INTERPRET:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if a.dtype == tl.float32:
        return tl.dot(a, b, acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def dot_precision(a, b, acc, PRECISION: tl.constexpr):
    """`dot` with the input precision of fp32 operands chosen by the caller (Triton's
    ``input_precision``): "ieee" (as `dot`: exact products on the FMA units) or "tf32x3" (three
    TF32 tensor-core products, big*big + big*small + small*big: fp32-accurate to about 2^-22
    relative, at tensor-core speed). A separate function, not a default argument of `dot`:
    Triton 3.6 does not accept string defaults on jit functions. The interpreter always computes
    in fp32 ("ieee")."""
    if INTERPRET:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
        return tl.dot(a, b, acc, input_precision="ieee")
    if a.dtype == tl.float32:
        return tl.dot(a, b, acc, input_precision=PRECISION)
    return tl.dot(a, b, acc)
