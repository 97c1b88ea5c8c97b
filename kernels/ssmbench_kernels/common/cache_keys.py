"""One order of Triton cache-key computation in every process (a workaround for Triton 3.6).

Triton 3.6's ``JITFunction.cache_key`` merges a callee's global constants into its caller's key
*before* it computes the callee's own key (``DependenciesFinder._update_hash`` reads
``func.used_global_vals``, empty until then, and only then ``func.cache_key``). So a kernel's key
depends on which kernels sharing its helpers (the storage formats, the PDL calls) were keyed
earlier in the same process. The sweep's compile pre-pass keys each kernel family in a process of
its own, the timing worker keys them in the order its cases run: on the H200's cold headline
(session 10) the worker missed the pre-pass's on-disk entries of ~30 kernels and compiled them
again, with specializations identical to the pre-pass's and different source keys (reproduced on
a CPU with Triton 3.6: `mamba2_intermediate_kernel` first, then `replay_fused_kernel`, gives the
worker's keys; Triton 3.9 reads the callee's key first and is order-free).

`settle_cache_keys` keys every Triton function of this package in one fixed order, helpers
first. Called before any kernel runs (`ssmbench.impls.registry.registry` does), it gives every
process the same keys under any Triton.
"""

from __future__ import annotations

import importlib

from ssmbench_kernels.common.launch import interpreting

TRITON_MODULES: tuple[str, ...] = (
    "ssmbench_kernels.common.launch",
    "ssmbench_kernels.common.activation",
    "ssmbench_kernels.common.dots",
    "ssmbench_kernels.storage.kernel",
    "ssmbench_kernels.conv1d.kernel",
    "ssmbench_kernels.mamba2_states.kernel",
    "ssmbench_kernels.mamba2_replay.kernel",
    "ssmbench_kernels.mamba2_replay.kernel_bw",
    "ssmbench_kernels.gdn.kernel",
)
"""Every module of this package that defines Triton functions, helpers before the kernels that
call them (tests/test_cache_keys.py checks that none is missing)."""


def settle_cache_keys() -> int:
    """Key every Triton function of `TRITON_MODULES`, in order; returns how many (0 under the
    interpreter, which keys and compiles nothing). Keys already computed stay as they are, so
    call it before the first kernel runs."""
    if interpreting():
        return 0
    from triton.runtime.jit import JITFunction

    count = 0
    for name in TRITON_MODULES:
        module = importlib.import_module(name)
        for attr in sorted(vars(module)):
            fn = getattr(module, attr)
            if isinstance(fn, JITFunction) and fn.fn.__module__ == name:
                _ = fn.cache_key
                count += 1
    return count
