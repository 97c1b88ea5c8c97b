"""What the peer-mapping tests (test_fla_mapping, test_flashinfer_mapping) do with a peer's chain,
the way check and the sweep do it (`ssmbench.measure.target.Target`): build it on a fresh
workload, run it once and verify it; run it again after its restore."""

from __future__ import annotations

import torch

from ssmbench.impls.registry import registry
from ssmbench.measure.target import Target


def built(name: str, case, device: str = "cpu") -> Target:
    """``name``'s chain for ``case`` on a fresh workload, not run yet."""
    target = Target.on(case, registry()[name], torch.device(device))
    target.build()
    return target


def verified_chain(name: str, case, device: str = "cpu"):
    """Run the chain once and verify it: (comparisons, chain, workload)."""
    target = built(name, case, device)
    return target.verify().comparisons, target.chain, target.workload


def assert_restore_repeats(name: str, case, keys: tuple[str, ...] = ("y", "state_after", "conv_state")) -> None:
    """Run, restore, run again: the outputs ``keys`` are the same (the chain puts back what it mutates)."""
    target = built(name, case)
    target.chain()
    first = {k: v.clone() for k, v in target.chain.outputs().items() if isinstance(v, torch.Tensor)}
    target.restore()
    target.chain()
    second = target.chain.outputs()
    for key in keys:
        assert torch.equal(first[key], second[key]), key
