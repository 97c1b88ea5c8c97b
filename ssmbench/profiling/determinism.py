"""`ssmbench profile --determinism N`: launch the chain N times from identical inputs and compare
what it produced, bit for bit. A race (two programs writing one element, a reduction order that
depends on scheduling) shows up here before it shows up as a verification failure.

Compared after every run: the chain's ``outputs()`` and every tensor its launches hold (pools,
scales, conv state, output buffers, found in the launch closures and one level of attributes:
the stored state as the kernels left it, not only what `outputs` reads back). Between runs
``Chain.restore`` puts the mutated state back, so every run starts from the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Difference:
    run: int
    tensor: str
    index: tuple[int, ...]
    first: Any
    later: Any

    def describe(self) -> str:
        return (f"run {self.run} differs from run 0 in {self.tensor} at {list(self.index)}: "
                f"{self.first!r} (run 0) vs {self.later!r}")


@dataclass
class DeterminismResult:
    runs: int
    tensors: int
    elements: int
    difference: Difference | None

    @property
    def identical(self) -> bool:
        return self.difference is None

    def describe(self) -> str:
        if self.identical:
            return (f"deterministic: {self.runs} runs bit-identical over {self.tensors} tensors "
                    f"({self.elements:,} elements)")
        return f"NOT deterministic: {self.difference.describe()}"  # type: ignore[union-attr]


def _tensors_in(obj: Any, path: str, found: dict[str, torch.Tensor], depth: int) -> None:
    if isinstance(obj, torch.Tensor):
        found.setdefault(path, obj)
        return
    if depth <= 0 or obj is None or isinstance(obj, (str, bytes, int, float, bool, type)):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            _tensors_in(value, f"{path}[{key!r}]", found, depth - 1)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _tensors_in(value, f"{path}[{i}]", found, depth - 1)
    elif callable(obj) and getattr(obj, "__closure__", None):
        names = obj.__code__.co_freevars
        for name, cell in zip(names, obj.__closure__, strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            _tensors_in(value, f"{path}.{name}", found, depth - 1)
    elif hasattr(obj, "__dict__") and not callable(obj):
        for name, value in vars(obj).items():
            _tensors_in(value, f"{path}.{name}", found, depth - 1)
    elif hasattr(obj, "__self__"):  # a bound method: its object's buffers
        _tensors_in(obj.__self__, path, found, depth - 1)


def chain_tensors(chain: Any) -> dict[str, torch.Tensor]:
    """Every tensor the chain's launches hold (closure variables, their attributes), by a path
    naming where it was found, plus what ``outputs()`` returns; one entry per storage."""
    found: dict[str, torch.Tensor] = {}
    for i, launch in enumerate(chain.launches):
        _tensors_in(launch, f"launch{i}", found, depth=3)
    for key, value in chain.outputs().items():
        _tensors_in(value, f"outputs[{key!r}]", found, depth=2)
    unique: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()
    for path, t in found.items():
        key = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride())) if t.numel() else (path,)
        if key not in seen:
            seen.add(key)
            unique[path] = t
    return unique


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes (NaNs and signed zeros compare by their bits)."""
    flat = t.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8) if flat.dtype != torch.bool else flat


def first_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[tuple[int, ...], Any, Any] | None:
    if a.shape != b.shape or a.dtype != b.dtype:
        return (), f"{tuple(a.shape)} {a.dtype}", f"{tuple(b.shape)} {b.dtype}"
    if torch.equal(_bits(a), _bits(b)):
        return None
    flat_a, flat_b = a.detach().contiguous().reshape(-1), b.detach().contiguous().reshape(-1)
    size = max(a.element_size(), 1)
    differs = (_bits(a).view(-1, size) != _bits(b).view(-1, size)).any(dim=1) if a.dtype != torch.bool \
        else flat_a != flat_b
    pos = int(torch.nonzero(differs)[0, 0])
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(pos), a.shape)) if a.dim() else ()
    return index, flat_a[pos].item(), flat_b[pos].item()


def check_determinism(chain: Any, runs: int, sync: Callable[[], None] = lambda: None) -> DeterminismResult:
    """Run ``chain`` ``runs`` times (restored before each run) and compare every run with the first."""
    if runs < 2:
        raise ValueError("--determinism needs N >= 2 runs")
    reference: dict[str, torch.Tensor] | None = None
    elements = 0
    for run in range(runs):
        if chain.restore is not None:
            chain.restore()
        chain()
        sync()
        now = {name: t.detach().clone() for name, t in chain_tensors(chain).items()}
        if reference is None:
            reference = now
            elements = sum(t.numel() for t in now.values())
            continue
        for name, first in reference.items():
            later = now.get(name)
            if later is None:
                return DeterminismResult(runs, len(reference), elements,
                                         Difference(run, name, (), "present", "missing"))
            diff = first_difference(first, later)
            if diff is not None:
                return DeterminismResult(runs, len(reference), elements, Difference(run, name, *diff))
    assert reference is not None
    return DeterminismResult(runs, len(reference), elements, None)
