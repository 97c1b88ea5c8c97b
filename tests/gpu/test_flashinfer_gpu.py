"""GPU checks of the FlashInfer peers on the headline shape (nemotron3-super TP8: 16 heads,
head_dim 64, dstate 128, 1 group, T=6, W=16), skipped without flashinfer
(tools/gpu/flashinfer_setup.sh installs the trimmed package offline).

Each chain is built, run eagerly, verified against ssmbench's references, then captured in a
CUDA graph, restored and replayed: the replay must reproduce the eager results bit for bit
(restore puts back every buffer the step mutates, so each timed sample runs the same step).
JIT cost: ~35 s per selective_state_update and ~5 min per checkpointing_ssu configuration
unless the cache archive was restored (docs/flashinfer.md).
"""

from __future__ import annotations

import pytest
import torch

from ssmbench.families.mamba2 import make_mamba2_workload
from ssmbench.impls import flashinfer as fi
from ssmbench.impls.optional import AVAILABLE
from ssmbench.impls.registry import registry
from ssmbench.measure.verify import verify
from ssmbench.spec.case import DEFAULT_ACCEPT, Case
from ssmbench.spec.presets import Mamba2Shape

pytestmark = pytest.mark.skipif(fi.FLASHINFER.availability() != AVAILABLE, reason=fi.FLASHINFER.availability())

SHAPE = Mamba2Shape(nheads=16, head_dim=64, dstate=128, ngroups=1, d_conv=4)


def headline_case(batch: int, state_dtype: str, rounding: str = "rn", pdl: bool = True) -> Case:
    return Case(id=f"fi-b{batch}-{state_dtype}{rounding}-pdl{int(pdl)}", sweep="gpu", family="mamba2",
                preset="nemotron3-super", tp=8, shape=SHAPE, batch=batch, T=6, state_dtype=state_dtype,
                rounding=rounding, pool="pool", accept=DEFAULT_ACCEPT, window=16, pdl=pdl, l2="hot", seed=0)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["flashinfer.ssu", "flashinfer.checkpointing"])
@pytest.mark.parametrize("batch", [8, 256])  # checkpointing: monolithic at b8, two-kernel at b256
@pytest.mark.parametrize("state_dtype", ["fp32", "bf16"])
def test_peer_verifies_and_replays_in_a_graph(name: str, batch: int, state_dtype: str) -> None:
    case = headline_case(batch, state_dtype)
    impl = registry()[name]
    assert impl.supports(case) is None
    wl = make_mamba2_workload(case, "cuda")
    chain = impl.build(case, wl)
    chain()
    torch.cuda.synchronize()
    comparisons = verify(case, wl, chain.outputs())
    assert all(c.ok for c in comparisons), [c.describe() for c in comparisons]
    eager = {k: v.clone() for k, v in chain.outputs().items() if isinstance(v, torch.Tensor)}

    chain.restore()
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        chain()
    chain.restore()
    graph.replay()
    torch.cuda.synchronize()
    replayed = chain.outputs()
    for key in ("y", "state_after", "conv_out", "conv_state"):
        assert torch.equal(eager[key], replayed[key]), key
