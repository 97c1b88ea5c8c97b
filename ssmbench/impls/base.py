"""The uniform interface every kernel family implements (and the store impls register into;
`ssmbench.impls.registry` fills it with the shipped impls and plugins and hands it to the harness).

An impl turns (case, workload) into a `Chain`: an ordered list of launches, each enqueuing one
kernel on the current CUDA stream (so the chain can be captured in a CUDA graph), with the
kernel names it launches (the timer attributes CUPTI records by them), and a way to read back
what it produced so the verifier can compare it with the reference.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ssmbench.spec.case import Case

INTERPRET_ENV = "TRITON_INTERPRET"


def triton_interpreted() -> bool:
    """Whether Triton runs its kernels in the interpreter here (``TRITON_INTERPRET`` set)."""
    return os.environ.get(INTERPRET_ENV, "0") not in ("", "0")


@dataclass
class Chain:
    """Launches of one decode step. ``launches[i]`` enqueues the kernel(s) named ``kernel_names[i]``."""

    launches: list[Callable[[], None]]
    kernel_names: list[str]
    outputs: Callable[[], dict[str, Any]] = field(default=lambda: {})
    """Read back results after the chain ran: ``{"y": ..., "state": ...}`` (see verify)."""
    restore: Callable[[], None] | None = None
    """Put back every buffer the chain mutates (state pool, conv state, ...), so each timed sample
    runs the same step. The timer calls it before each sample, outside the measured span; it must
    only enqueue device work (no allocation, no host sync). None: the chain mutates nothing that
    changes what the next run does. `snapshot` builds one."""
    hot: list[Any] | None = None
    """Tensors a real decode step finds in L2 (the in_proj output the previous GEMM just wrote):
    the `realistic` L2 mode re-touches them after the flush. None: the workload's in_proj outputs
    (`ssmbench.measure.l2.in_proj_outputs`), right for any chain that reads them in place."""
    notes: list[str] = field(default_factory=list)
    """What the timed span holds besides the family's own work (a peer's layout copies, the
    gather/scatter its API needs): copied into every result record's notes."""

    def __call__(self) -> None:
        for launch in self.launches:
            launch()


class Impl(ABC):
    """A named implementation of one kernel family."""

    name: str = ""
    family: str = ""  # "mamba2" | "gdn"
    kind: str = ""  # "reference" | "triton" | "peer"
    uses_window: bool = False
    """Whether results depend on the case's window (replay). Impls that don't run only on the
    first window value of a sweep, so identical measurements are not repeated."""
    needs_gpu: bool = False

    def availability(self) -> str:
        """"available", or why this machine cannot run the impl at all (an optional package
        missing); `ssmbench list` shows it. Only peers depend on optional packages."""
        return "available"

    def supports(self, case: Case) -> str | None:
        """None when the impl can run ``case``, else the reason it cannot."""
        if case.family != self.family:
            return f"{self.name} is a {self.family} impl"
        return None

    @abstractmethod
    def build(self, case: Case, workload: Any) -> Chain:
        """Allocate this impl's buffers for ``workload`` and return its launch chain."""

    def bytes_moved(self, case: Case, workload: Any = None) -> int | None:
        """The bytes the chain must move for ``case`` (docs/spec.md §10): every tensor region it reads or
        writes, once per kernel that touches it (stride-0 broadcasts once; state written only on
        write steps). ``workload`` gives what the case alone does not (e.g. how many rows are
        padding). None = unknown: the results then carry no TB/s or SOL."""
        return None


class Peer(Impl, ABC):
    """An impl around another project's kernels, from an optional package (``package``: an
    `ssmbench.impls.optional.OptionalModule`): it runs a case when the package imports here, its API
    can express the case (`case_reason`) and this machine can run its kernels (`runs_here`), each
    refusal with its reason, in that order."""

    kind = "peer"
    package: Any = None

    def availability(self) -> str:
        return self.package.availability()

    def case_reason(self, case: Case) -> str | None:
        """Why the package's API cannot express ``case`` (None: it can)."""
        return None

    def runs_here(self) -> str | None:
        """Why this machine cannot run the package's kernels (None: it can)."""
        return None

    def supports(self, case: Case) -> str | None:
        if (reason := super().supports(case)) is not None:
            return reason
        if (state := self.availability()) != "available":
            return state
        if (reason := self.case_reason(case)) is not None:
            return reason
        return self.runs_here()


def snapshot(*tensors: Any) -> Callable[[], None]:
    """A `Chain.restore`: copies of ``tensors`` taken now, copied back in place when called
    (None entries, e.g. a format without scales, are skipped)."""
    pairs = [(t, t.clone()) for t in tensors if t is not None]

    def restore() -> None:
        for live, saved in pairs:
            live.copy_(saved)

    return restore


_REGISTRY: dict[str, Impl] = {}


def register(impl: Impl) -> Impl:
    if impl.name in _REGISTRY:
        raise ValueError(f"impl {impl.name!r} registered twice")
    _REGISTRY[impl.name] = impl
    return impl


def forget(names: list[str]) -> None:
    """Drop impls again: those a plugin registered before its import failed, so none of a broken
    plugin's impls is half there."""
    for name in names:
        _REGISTRY.pop(name, None)


def registered() -> dict[str, Impl]:
    """The impls registered so far, in registration order (`ssmbench.impls.registry.registry` first
    imports the shipped impls and the plugins)."""
    return dict(_REGISTRY)
