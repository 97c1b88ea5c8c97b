"""`ssmbench.measure.compiles`: the timing process's own compiles, seen through Triton's JIT hooks
(called as Triton 3.x's `JITFunction._call_hook` calls them: key=, repr=, fn=<info with .name>, ...)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ssmbench.measure.compiles import COMPILE_S, CompileLog, describe_compiles, install_compile_log


def hook_kwargs(name: str, key: tuple) -> dict:
    return dict(key=key, repr=f"{name}[num_warps=4, num_ctas=1](x: *fp32)", fn=SimpleNamespace(name=name),
                compile={}, is_manual_warmup=False, already_compiled=False)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_slow_first_use_is_a_compile_and_a_fast_one_a_cache_load() -> None:
    clock = Clock()
    log = CompileLog(clock=clock)
    log.before(**hook_kwargs("gdn_decode_kernel", ("a",)))
    clock.now += 2.5  # compiled
    log.after(**hook_kwargs("gdn_decode_kernel", ("a",)))
    log.before(**hook_kwargs("conv1d_update_kernel", ("b",)))
    clock.now += COMPILE_S / 10  # loaded from the on-disk cache
    log.after(**hook_kwargs("conv1d_update_kernel", ("b",)))
    assert log.take() == [("gdn_decode_kernel", 2.5)]
    assert log.take() == []  # taken: the next pair starts clean
    assert "gdn_decode_kernel 2.5 s" in describe_compiles([("gdn_decode_kernel", 2.5)])


def test_the_hooks_never_raise_and_never_skip_a_compile() -> None:
    log = CompileLog()
    assert log.before() is None  # nothing Triton would pass: ignored, not raised
    assert log.after(key=object()) is None  # an `after` without its `before`
    assert log.take() == []


def test_install_chains_the_hooks_already_there(monkeypatch) -> None:
    knobs = pytest.importorskip("triton").knobs
    seen = []
    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", lambda **kw: seen.append("theirs") or False)
    monkeypatch.setattr(knobs.runtime, "jit_post_compile_hook", None)
    log = install_compile_log()
    assert log is not None
    assert knobs.runtime.jit_cache_hook(**hook_kwargs("k", (1,))) is False  # their answer, unchanged
    assert knobs.runtime.jit_post_compile_hook(**hook_kwargs("k", (1,))) is None
    assert seen == ["theirs"]


def test_the_sweep_counts_the_pairs_that_compiled() -> None:
    from ssmbench.measure.compiles import pairs_that_compiled

    records = [SimpleNamespace(notes=[describe_compiles([("k", 1.0)])]), SimpleNamespace(notes=["other"]),
               SimpleNamespace(notes=None)]
    assert pairs_that_compiled(records) == 1


def test_the_trace_writes_each_first_use_with_its_specialization(tmp_path, monkeypatch) -> None:
    """`SSMBENCH_COMPILE_TRACE`: one JSON line per first use, role and Triton's specialization data,
    so what a timing process compiled can be diffed against what the pre-pass compiled."""
    import json

    from ssmbench.measure.compiles import TRACE_ENV

    trace = tmp_path / "compiles.jsonl"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    clock = Clock()
    log = CompileLog(clock=clock, role="prepass")
    kwargs = hook_kwargs("replay_fused_kernel", ("k",))
    kwargs["compile"] = {"specialization_data": '{"attrs": [["tt.divisibility", 16]]}'}
    log.before(**kwargs)
    clock.now += 1.25
    log.after(**kwargs)
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    assert len(lines) == 1
    assert lines[0]["role"] == "prepass" and lines[0]["kernel"] == "replay_fused_kernel"
    assert lines[0]["seconds"] == 1.25 and "tt.divisibility" in lines[0]["specialization"]
    monkeypatch.delenv(TRACE_ENV)
    log.before(**kwargs)
    log.after(**kwargs)
    assert len(trace.read_text().splitlines()) == 1  # no trace without the variable


def test_the_trace_names_each_process_cache_key_parts(tmp_path, monkeypatch) -> None:
    """Besides the specialization, a trace line carries the kernel's source key and the process's
    other cache-key parts (Triton install, backend, environment, folder): what told a key-order
    difference from a specialization difference on the H200 (session 10). Compiled for sm_90 with a
    stand-in driver: no GPU needed (ptxas ships with Triton)."""
    import json

    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver

    from ssmbench.measure.compiles import TRACE_ENV

    class StandIn:
        def get_current_target(self) -> GPUTarget:
            return GPUTarget("cuda", 90, 32)

    monkeypatch.setattr(driver, "_active", StandIn(), raising=False)
    if getattr(driver, "active", None).__class__ is not StandIn:
        pytest.skip("this Triton keeps its active driver elsewhere")
    trace = tmp_path / "compiles.jsonl"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    log = CompileLog(clock=Clock(), role="timing")
    kwargs = hook_kwargs("gdn_decode_kernel", ("k",))
    kwargs["fn"] = SimpleNamespace(name="gdn_decode_kernel", jit_function=SimpleNamespace(cache_key="abc"))
    log.before(**kwargs)
    log.after(**kwargs)
    line = json.loads(trace.read_text())
    assert "identity_error" not in line, line.get("identity_error")
    assert len(line["triton_key"]) == 12 and line["backend"].endswith("90") and isinstance(line["env"], dict)
    assert line["cache_dir"] and len(line["source_key"]) == 12
