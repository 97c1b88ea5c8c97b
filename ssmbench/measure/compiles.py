"""Which Triton kernels a timing process compiled itself: the sweep's compile pre-pass is meant to
leave it none (docs/tuning.md, "Parallel compilation"), and a compile inside a pair costs seconds
of wall time (issue 18: a bare-machine headline spent ~43 s more inside its pairs than a warm one).

Triton calls ``knobs.runtime.jit_cache_hook`` before it compiles or loads a kernel a process has
not used yet and ``jit_post_compile_hook`` after; a load from the on-disk cache takes milliseconds,
a compile seconds, so a first use slower than `COMPILE_S` is counted as a compile. The hooks only
observe: they return None (a true value would make Triton skip the kernel), never raise, and call
any hooks installed before them. A Triton without these knobs (or the interpreter, which compiles
nothing) records nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

COMPILE_S = 0.3
"""A first use slower than this is a compile, not a load from the cache."""
TRACE_ENV = "SSMBENCH_COMPILE_TRACE"
"""A file path: every process with a compile log (the timing workers and the pre-pass's) appends one
JSON line per first use of a kernel to it -- role, kernel, seconds, and Triton's specialization
data (argument types, alignments, constants, options) -- so a kernel the timing process compiled
although the pre-pass ran its pair can be diffed against what the pre-pass compiled."""
NOTE_PREFIX = "compiled in the timing process"
"""How a record's note about them begins (`describe_compiles`; the sweep's summary counts them)."""


@dataclass
class CompileLog:
    """Compiles seen since the last `take`, as (kernel name, seconds)."""

    started: dict[Any, tuple[str, float]] = field(default_factory=dict)
    events: list[tuple[str, float]] = field(default_factory=list)
    clock: Callable[[], float] = time.perf_counter
    role: str = "timing"
    """Written into the trace (`TRACE_ENV`): ``timing`` or ``prepass``."""
    identity: dict | None = None
    """This process's parts of Triton's on-disk cache key besides the kernel (`_cache_identity`),
    read at the first traced compile (the CUDA context exists by then)."""

    def before(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.started[_key(kwargs)] = (_name(kwargs), self.clock())
        except Exception:  # noqa: BLE001 - an observer must never break a compile
            pass

    def after(self, *args: Any, **kwargs: Any) -> None:
        try:
            name, t0 = self.started.pop(_key(kwargs))
            seconds = self.clock() - t0
            if seconds >= COMPILE_S:
                self.events.append((name, seconds))
            trace = os.environ.get(TRACE_ENV)
            if trace:
                spec = (kwargs.get("compile") or {}).get("specialization_data")
                if self.identity is None:
                    self.identity = _cache_identity()
                line = {"role": self.role, "pid": os.getpid(), "kernel": name, "seconds": round(seconds, 3),
                        "source_key": _short(getattr(getattr(kwargs.get("fn"), "jit_function", None), "cache_key", "")),
                        **self.identity, "specialization": spec}
                with open(trace, "a", encoding="utf-8") as out:
                    out.write(json.dumps(line) + "\n")
        except Exception:  # noqa: BLE001
            pass

    def take(self) -> list[tuple[str, float]]:
        events, self.events = self.events, []
        return events


def _short(text: str) -> str:
    return hashlib.sha256(str(text).encode()).hexdigest()[:12] if text else ""


def _cache_identity() -> dict:
    """What Triton's on-disk cache key holds besides the kernel's source and specialization: its
    own install (``triton_key``), the backend (ptxas version, arch), the cache-invalidating
    environment, and the cache folder. Two processes that compile one specialization twice differ
    in one of these or in the kernel's source key (issue 18's cold-run puzzle)."""
    try:
        from triton import knobs
        from triton._C.libtriton import get_cache_invalidating_env_vars
        from triton.compiler.compiler import make_backend
        from triton.runtime.cache import triton_key  # 3.6 and 3.9 alike (not in compiler.compiler in 3.6)
        from triton.runtime.driver import driver

        backend = make_backend(driver.active.get_current_target())
        return {"triton_key": _short(triton_key()), "backend": backend.hash(),
                "env": get_cache_invalidating_env_vars(), "cache_dir": str(knobs.cache.dir)}
    except Exception as exc:  # noqa: BLE001 - an observer must never break a compile
        return {"identity_error": repr(exc)[:200]}


def _key(kwargs: dict) -> Any:
    key = kwargs.get("key")
    return (_name(kwargs), repr(key))


def _name(kwargs: dict) -> str:
    """The kernel's name: Triton passes ``fn`` (its JitFunctionInfo: ``.name``) and ``repr``."""
    return str(getattr(kwargs.get("fn"), "name", None) or kwargs.get("repr", "?")).split("[")[0]


def _chained(first: Callable | None, second: Callable) -> Callable:
    def hook(*args: Any, **kwargs: Any) -> Any:
        second(*args, **kwargs)
        return first(*args, **kwargs) if first is not None else None

    return hook


def install_compile_log(role: str = "timing") -> CompileLog | None:
    """Start recording this process's compiles (None: this Triton has no such hooks)."""
    try:
        from triton import knobs

        runtime = knobs.runtime
        before, after = runtime.jit_cache_hook, runtime.jit_post_compile_hook
    except Exception:  # noqa: BLE001 - an older Triton, or none
        return None
    log = CompileLog(role=role)
    runtime.jit_cache_hook = _chained(before, log.before)
    runtime.jit_post_compile_hook = _chained(after, log.after)
    return log


def describe_compiles(events: list[tuple[str, float]]) -> str:
    """The note a record carries when its pair compiled kernels in the timing process."""
    total = sum(s for _, s in events)
    listed = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in events)
    return f"{NOTE_PREFIX} ({len(events)} kernel(s), {total:.1f} s; the pre-pass missed them): {listed}"


def pairs_that_compiled(records: list[Any]) -> int:
    """How many records carry a `describe_compiles` note."""
    return sum(any(str(n).startswith(NOTE_PREFIX) for n in (getattr(r, "notes", None) or [])) for r in records)
