"""Activations shared by the Triton kernels (jit device functions)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def softplus_thresholded(u):
    """softplus(u) = u if u > 20 else log1p(exp(u)) (docs/spec.md §4's threshold 20, as the reference
    `ssmbench_kernels.common.reference.softplus_thresholded`), the branch chosen before exp (no inf*0).

    log1p via Goldberg's correction (accurate for tiny exp(u); Triton has no portable log1p
    that also runs in the interpreter)."""
    e = tl.exp(tl.minimum(u, 20.0))
    w = 1.0 + e
    lp = tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))
    return tl.where(u > 20.0, u, lp)
