"""`settle_cache_keys` must know every module of ssmbench_kernels that defines Triton functions:
a module it misses is keyed in whatever order a process first uses it, and under Triton 3.6 the
compile pre-pass's cache entries then miss the timing worker (docs/tuning.md)."""

from __future__ import annotations

import importlib
import pkgutil

import ssmbench_kernels
from ssmbench_kernels.common.cache_keys import TRITON_MODULES


def _defines_triton_functions(name: str) -> bool:
    module = importlib.import_module(name)
    return any(type(value).__module__.startswith("triton.runtime") and getattr(value, "fn", None) is not None
               and value.fn.__module__ == name for value in vars(module).values())


def test_every_triton_module_is_settled() -> None:
    names = [m.name for m in pkgutil.walk_packages(ssmbench_kernels.__path__, "ssmbench_kernels.")]
    with_triton = {n for n in names if _defines_triton_functions(n)}
    assert with_triton, "found no Triton module: the scan is broken"
    assert with_triton <= set(TRITON_MODULES), f"not in TRITON_MODULES: {sorted(with_triton - set(TRITON_MODULES))}"
    assert set(TRITON_MODULES) <= with_triton, f"no Triton functions: {sorted(set(TRITON_MODULES) - with_triton)}"


def test_helpers_are_keyed_before_the_kernels_that_call_them() -> None:
    order = list(TRITON_MODULES)
    assert order.index("ssmbench_kernels.storage.kernel") < order.index("ssmbench_kernels.mamba2_states.kernel")
    assert max(order.index(f"ssmbench_kernels.common.{m}") for m in ("launch", "activation", "dots")) \
        < order.index("ssmbench_kernels.storage.kernel")


def test_a_failure_to_settle_warns_and_the_registry_goes_on(monkeypatch, capsys) -> None:
    """Settling is an optimization: a Triton whose keys cannot be computed here must not take the
    registry (every command) down."""
    from ssmbench.impls import registry as reg
    from ssmbench_kernels.common import cache_keys

    def broken() -> int:
        raise RuntimeError("no keys here")

    monkeypatch.setattr(cache_keys, "settle_cache_keys", broken)
    reg._settle_kernel_keys.cache_clear()
    try:
        reg._settle_kernel_keys()
        assert "Triton cache keys not settled (RuntimeError: no keys here)" in capsys.readouterr().err
        assert "triton.gdn" in reg.registry()
    finally:
        reg._settle_kernel_keys.cache_clear()
