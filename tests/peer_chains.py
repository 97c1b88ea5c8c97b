"""What the peer-mapping tests (test_fla_mapping, test_flashinfer_mapping) do with a peer's chain,
the way check and the sweep do it (`ssmbench.measure.target.Target`): build it on a fresh
workload, run it once and verify it; run it again after its restore."""

from __future__ import annotations

import torch

from ssmbench.impls.registry import registry
from ssmbench.measure.target import Target
from ssmbench.spec.case import AcceptLaw, Case


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


def gdn_case(default_shape, case_id: str, **kw) -> Case:
    """A GDN case for the GDN peers' tests: ``default_shape`` (or ``shape=``), fp32 state, final write,
    `pool` mode, T = 3 over 3 rows, bf16 activations; ``options`` adds case options, the other keywords
    replace fields."""
    extras = {"intermediate": False, "write_final": True}
    extras.update(kw.pop("options", {}))
    base = dict(id=case_id, sweep="t", family="gdn", preset=None, tp=1, shape=default_shape, batch=3, T=3,
                state_dtype="fp32", rounding="rn", pool="pool", accept=AcceptLaw("rate", (0.6,)), window=None,
                pdl=True, l2="hot", seed=3, act_dtype="bf16", extras=tuple(extras.items()))
    base.update(kw)
    return Case(**base)
