"""Launch plumbing shared by the Triton kernels: interpreter detection and PDL (docs/spec.md §7).

Why a module of its own: the PDL intrinsics (`gdc_wait`, `gdc_launch_dependents`) do not run
under the Triton interpreter (3.9 raises "`_semantic` argument must be provided"), and
`launch_pdl=True` needs sm_90+. Every kernel calls the two `pdl_*` helpers below with a constexpr
flag that the wrappers compute with `pdl_enabled`, so the interpreter path and pre-Hopper GPUs
compile the calls away while the production path keeps them.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


INTERPRET = tl.constexpr(interpreting())
"""Read once at import (kernels are decorated then too): the tests set TRITON_INTERPRET before
importing the kernel modules."""


def pdl_supported(device: torch.device) -> bool:
    """Programmatic dependent launch needs a CUDA device of compute capability 9.0 or newer."""
    if interpreting() or device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def pdl_enabled(pdl: bool, device: torch.device) -> bool:
    """The PDL constexpr a kernel is compiled with: requested *and* supported here.

    Under the interpreter (and on pre-Hopper GPUs) PDL silently degrades to ordinary stream
    ordering, which is always correct; only the overlap is lost.
    """
    return bool(pdl) and pdl_supported(device)


def launch_options(pdl: bool, num_warps: int, num_stages: int, max_regs: int = 0) -> dict:
    """Keyword arguments for ``kernel[grid](...)``; ``launch_pdl`` only when PDL is on; ``maxnreg``
    (ptxas's registers-per-thread cap) only when ``max_regs`` is set and not interpreting: fewer
    registers, more programs an SM (bytes in flight), at the price of spills."""
    opts: dict = {"num_warps": num_warps, "num_stages": num_stages}
    if pdl:
        opts["launch_pdl"] = True
    if max_regs and not interpreting():
        opts["maxnreg"] = max_regs
    return opts


def is_capturing() -> bool:
    """True while the current CUDA stream is being captured into a graph (no host syncs then)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


@triton.jit
def pdl_wait(ENABLED: tl.constexpr):
    """Wait for the producer grid's memory to be visible (no-op unless ENABLED).

    Call it after every load that does not depend on the producer and before the first one
    that does; never inside a software-pipelined ``tl.range`` (triton-lang/triton#11905).
    """
    if ENABLED:
        gdc_wait()


@triton.jit
def pdl_launch_dependents(ENABLED: tl.constexpr):
    """Let the next PDL kernel in the stream start launching (no-op unless ENABLED)."""
    if ENABLED:
        gdc_launch_dependents()


@triton.jit
def prefetch_l2(base, ELEMS: tl.constexpr, LINES_PAD: tl.constexpr, ENABLED: tl.constexpr):
    """Ask L2 for the ``ELEMS`` contiguous elements at ``base`` (a typed pointer), one
    ``prefetch.global.L2`` per 128-byte line (``LINES_PAD``: a power of two >= the line count,
    `l2_lines`; the extra lanes repeat the last line). Nothing comes back to registers: a consumer
    issues it for data no producer writes, before `pdl_wait`, so the bytes move while the producer
    runs. No-op unless ENABLED (the interpreter has no inline assembly: the wrappers pass False there)."""
    if ENABLED:
        PER_LINE: tl.constexpr = 1024 // base.dtype.element_ty.primitive_bitwidth  # elements in 128 bytes
        LINES: tl.constexpr = (ELEMS + PER_LINE - 1) // PER_LINE
        lines = tl.minimum(tl.arange(0, LINES_PAD), LINES - 1)
        tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [base + lines * PER_LINE],
                                  dtype=tl.int32, is_pure=False, pack=1)


def l2_lines(tensor: torch.Tensor, elems: int) -> int:
    """`prefetch_l2`'s ``LINES_PAD`` for ``elems`` elements of ``tensor``'s dtype."""
    return triton.next_power_of_2(triton.cdiv(elems * tensor.element_size(), 128))
