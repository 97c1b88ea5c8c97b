"""`example.intermediate`: the plugin's kernel as an ssmbench impl (docs/plugins.md walks through
it). The chain is the shipped conv1d head followed by the plugin's own state-update kernel, so
its numbers sit beside `triton.intermediate`'s on the same workload. Importing this module
registers the impl (the package's ``ssmbench.impls`` entry point names it)."""

from __future__ import annotations

from typing import Any

import torch

from ssmbench.families.mamba2 import Mamba2Workload, intermediate_chain_bytes, intermediate_pool
from ssmbench.impls.base import Chain, Impl, register, snapshot
from ssmbench.impls.triton_mamba import ConvHead, per_token_state_outputs
from ssmbench.spec.case import Case
from ssmbench_example_plugin.kernel import KERNEL_NAMES, example_intermediate
from ssmbench_kernels.conv1d.kernel import KERNEL_NAMES as CONV1D_KERNELS


class ExampleIntermediate(Impl):
    """conv1d (shipped) -> the example per-token-state kernel (fp32 states)."""

    name = "example.intermediate"
    family = "mamba2"
    kind = "triton"

    def supports(self, case: Case) -> str | None:
        """Say why not, rather than fail: the plan shows the reason and the pair is skipped."""
        if (reason := super().supports(case)) is not None:
            return reason
        if case.state_dtype != "fp32":
            return "the example stores fp32 states only"
        if case.pool == "padded" or case.option("tree", False):
            return "the example handles neither padding rows nor draft trees"
        if not 2 <= case.shape.d_conv <= 4:
            return "conv widths 2..4 (the shipped conv1d head)"
        return None

    def build(self, case: Case, workload: Mamba2Workload) -> Chain:
        """Allocate once, here; the launches only enqueue kernels (CUDA-graph capturable)."""
        s, b, T = workload.shape, workload.batch, case.T
        head = ConvHead(case, workload, pdl_dependents=False)  # the conv1d head's buffers and launch
        pool, dst = intermediate_pool(case, workload)  # the shared start: every row's state at its slot
        initial = pool.clone()
        y = torch.full((b * T, s.nheads * s.head_dim), float("nan"), dtype=workload.xbc.dtype,
                       device=workload.xbc.device)  # poisoned: an element the kernel misses fails

        def state_update() -> None:
            example_intermediate(pool.data, workload.slot_idx, dst, head.conv_out, workload.dt_raw, workload.A,
                                 workload.D, workload.dt_bias, workload.z, y, nheads=s.nheads,
                                 head_dim=s.head_dim, dstate=s.dstate, ngroups=s.ngroups, T=T)

        def outputs() -> dict[str, Any]:
            # conv_out, conv_state, y, start_state, state_after (at the accepted token), accepted
            return per_token_state_outputs(head, y, pool, initial, dst, workload)

        # The kernel reads the read slots and writes only the dst slots, so only the conv state
        # (updated in place by the head) must be put back before each timed sample.
        return Chain([head.launch, state_update], [*CONV1D_KERNELS, *KERNEL_NAMES], outputs=outputs,
                     restore=snapshot(head.conv_state))

    def bytes_moved(self, case: Case, workload: Mamba2Workload | None = None) -> int:
        """Same data movement as the shipped per-token-state chain: its byte model (the SOL floor)."""
        return intermediate_chain_bytes(case, workload)


register(ExampleIntermediate())
