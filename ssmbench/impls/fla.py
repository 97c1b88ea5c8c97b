"""flash-linear-attention's Gated DeltaNet decode kernel as a peer impl, `fla.gdn`: ssmbench's own
conv1d -> `fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule` (fla-core, pure Triton: the
kernel family vLLM's and SGLang's GDN decode grew from), so the chain compares like for like
with `triton.gdn`.

fla-core is an optional dependency (``pip install 'ssmbench[fla]'``): nothing here imports it
until the impl is asked whether it can run a case, so ssmbench works without it and the sweep
skips `fla.gdn` with the reason. The case-to-API mapping is pure functions (`fla_case_reason`,
`fla_arguments`, `fla_extra_bytes`, `timed_notes`) tested on CPU with a fake `fla` module;
docs/gdn.md has the mapping table.

FLA's API takes contiguous q/k/v (no row strides) and a contiguous initial-state batch, not pool
slots, and returns the final state in a new fp32 tensor. So the chain copies q, k, v out of the
conv output (timed: any caller of the API pays them; given the strided views, FLA's own
``input_guard`` would make the same copies inside the call, allocating each time, so they are
done here into buffers allocated once, as a named launch), and in the pool modes gathers the read
slots into the initial state and scatters the final state to the write slots (timed too). Every
record's notes say what the span holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ssmbench.families import gdn
from ssmbench.families.common import act_bytes, state_bytes
from ssmbench.families.gdn import GDNWorkload
from ssmbench.impls.base import Chain, Peer, register, triton_interpreted
from ssmbench.impls.optional import OptionalModule
from ssmbench.impls.triton_gdn import restore_rows
from ssmbench.spec.case import Case
from ssmbench_kernels.conv1d.kernel import KERNEL_NAMES as CONV1D_KERNELS
from ssmbench_kernels.conv1d.kernel import conv1d_update

FLA_VERSION = "0.6.0"
FLA = OptionalModule("fla.ops.gated_delta_rule", f"fla-core {FLA_VERSION}", "pip install 'ssmbench[fla]'")
FLA_KERNELS = ("fused_recurrent_gated_delta_rule_fwd_kernel",)
COPY_KERNEL = "elementwise_kernel (x3: q, k, v made contiguous)"
GATHER_KERNEL = "indexSelectLargeIndex | indexSelectSmallIndex (read slots -> initial state)"
SCATTER_KERNEL = "index_copy_kernel (final state -> write slots)"
"""PyTorch's kernels in the span (names as CUPTI shows them; informational: the timer attributes
every kernel of a sample, the profilers select the chain by its NVTX range)."""
STATE_FORMAT = "fp32"
"""The one state format FLA stores: its final state is always a new fp32 tensor."""


# ---------------------------------------------------------------------------------------------
# What its API can express (pure functions of the case)
# ---------------------------------------------------------------------------------------------

def fla_case_reason(case: Case) -> str | None:
    """Why `fla.gdn` cannot run ``case`` (None: it can)."""
    if case.state_dtype != STATE_FORMAT:
        return (f"fused_recurrent_gated_delta_rule stores its final state in fp32 only (no {case.state_dtype} "
                "store: a pool in that format would need a separate cast pass)")
    if case.option("intermediate", False):
        return "fused_recurrent_gated_delta_rule stores only the final state (no per-token intermediate states)"
    if not case.option("write_final", True):
        return "fused_recurrent_gated_delta_rule's one stored state is the final state (write_final off)"
    if case.pool == "padded":
        return ("FLA has no padding rows (slot -1): every row reads an initial state and gets computed outputs, "
                "where docs/spec.md §3 asks for zero outputs and no state write")
    if not 2 <= case.shape.d_conv <= 4:
        return "conv widths 2..4 (ssmbench's conv1d head)"
    return None


def gathers(case: Case) -> bool:
    """Whether the chain gathers/scatters pool slots around FLA's call (every mode but `direct`,
    where the pool is the batch of initial states in row order)."""
    return case.pool != "direct"


def timed_notes(case: Case) -> list[str]:
    """What the timed span holds, for every record of the impl."""
    notes = ["timed: conv1d, 3 copies making q/k/v contiguous (FLA's API takes no row strides), "
             "fla-core fused_recurrent_gated_delta_rule (final state to a new fp32 tensor)"]
    if gathers(case):
        notes.append("timed: the gather of the read slots into FLA's contiguous initial state (index_select) and the "
                     "scatter of its final state to the write slots (index_copy_): FLA takes no pool slots")
    else:
        notes.append("direct pool: the pool is FLA's initial state as it is (no gather, no scatter)")
    return notes


def qkv_copy_bytes(case: Case) -> int:
    """The q / k / v copies out of the conv output into contiguous buffers (`contiguous_inputs`):
    read and written once, the traffic a peer whose API takes no row strides adds."""
    return 2 * case.batch * case.T * case.shape.conv_dim * act_bytes(case)


def fla_extra_bytes(case: Case) -> int:
    """Traffic the chain adds to the GDN byte model (`gdn.chain_bytes`) to fit FLA's API: the q/k/v
    copies (`qkv_copy_bytes`) and, in the pool modes, the gather (read + write one state per row)
    and the scatter (read + write one state per row)."""
    s, b = case.shape, case.batch
    one_state = state_bytes(STATE_FORMAT, s.num_v_heads * s.head_v_dim, s.head_k_dim)
    return qkv_copy_bytes(case) + (4 * b * one_state if gathers(case) else 0)


# ---------------------------------------------------------------------------------------------
# The case-to-API mapping (pure: tensors in, keyword arguments out)
# ---------------------------------------------------------------------------------------------

def contiguous_inputs(workload: GDNWorkload, conv_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Buffers (q, k, v) in FLA's layout: contiguous (batch, T, H, K), (batch, T, H, K),
    (batch, T, HV, V), in the activation dtype, NaN-poisoned (an element no copy writes shows)."""
    return tuple(torch.full(view.shape, float("nan"), dtype=view.dtype, device=view.device)
                 for view in workload.views(conv_out))


def qkv_copier(workload: GDNWorkload, conv_out: torch.Tensor, bufs: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    """The launch copying q, k, v out of ``conv_out`` into ``bufs`` (`contiguous_inputs`): the step
    every GDN peer whose API takes no row strides puts between conv1d and its kernel (`COPY_KERNEL`)."""
    views = workload.views(conv_out)

    def copy_inputs() -> None:
        for buf, view in zip(bufs, views, strict=True):
            buf.copy_(view)

    return copy_inputs


def fla_arguments(case: Case, workload: GDNWorkload, *, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  h0: torch.Tensor) -> dict[str, Any]:
    """Keyword arguments of `fused_recurrent_gated_delta_rule` for one step of ``case``.

    q, k (batch, T, H, K) and v (batch, T, HV, V) contiguous (`contiguous_inputs`): head hv reads
    q/k head hv // (HV // H), FLA's GVA rule and ours. a and b go in raw, as (batch, T, HV) views:
    the kernel computes g = -exp(A_log) softplus(a + dt_bias) (threshold 20) and beta =
    sigmoid(b), and L2-normalises q and k (eps 1e-6 inside the sqrt, q times ``scale`` after),
    all as docs/spec.md §9. ``h0`` is the (batch, HV, V, K) fp32 initial state: ``state_v_first``
    is ssmbench's K-last layout (FLA's default is (K, V)).
    """
    bt = (workload.batch, case.T)
    return dict(
        q=q, k=k, v=v, g=workload.a.unflatten(0, bt), beta=workload.b.unflatten(0, bt),
        scale=case.option("scale"), initial_state=h0, output_final_state=True,
        use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True, A_log=workload.A_log, dt_bias=workload.dt_bias,
        use_beta_sigmoid_in_kernel=True, state_v_first=True,
    )


# ---------------------------------------------------------------------------------------------
# The impl
# ---------------------------------------------------------------------------------------------

def _triton_runs_here() -> bool:
    """FLA's kernels are Triton: a CUDA GPU, or Triton's interpreter on a CPU (TRITON_INTERPRET)."""
    return torch.cuda.is_available() or triton_interpreted()


class FLAGDN(Peer):
    """conv1d -> fused_recurrent_gated_delta_rule (final state only, fp32), gathered from and
    scattered to the pool slots outside `direct` mode. No PDL launch: on pdl=on cases the kernels
    run stream-ordered (FLA's kernel does not wait on a PDL trigger)."""

    name = "fla.gdn"
    family = "gdn"
    package = FLA

    def case_reason(self, case: Case) -> str | None:
        return fla_case_reason(case)

    def runs_here(self) -> str | None:
        return None if _triton_runs_here() else "FLA's Triton kernel needs a CUDA GPU (or TRITON_INTERPRET=1 on a CPU)"

    def build(self, case: Case, workload: GDNWorkload) -> Chain:
        fla = FLA.load()
        T = case.T
        pool = gdn.state_pool(case, workload)
        read, write = workload.read_idx, workload.write_idx
        start_rows = pool.data.index_select(0, read)
        conv_state = workload.conv_state.clone()  # updated in place by conv1d
        conv_out = torch.full_like(workload.qkv, float("nan"))
        q, k, v = contiguous_inputs(workload, conv_out)
        h0 = torch.empty_like(start_rows) if gathers(case) else pool.data
        args = fla_arguments(case, workload, q=q, k=k, v=v, h0=h0)
        result: dict[str, torch.Tensor] = {}

        def conv(validate: bool = False) -> None:
            conv1d_update(workload.qkv, conv_state, workload.conv_weight, None, read, workload.k_prev, T=T,
                          out=conv_out, pdl=False, validate=validate)

        copy_inputs = qkv_copier(workload, conv_out, (q, k, v))

        def gather() -> None:
            torch.index_select(pool.data, 0, read, out=h0)

        def state_update() -> None:
            result["o"], result["ht"] = fla.fused_recurrent_gated_delta_rule(**args)

        def scatter() -> None:
            pool.data.index_copy_(0, write, result["ht"])

        steps = [(conv, CONV1D_KERNELS[0]), (copy_inputs, COPY_KERNEL),
                 *([(gather, GATHER_KERNEL)] if gathers(case) else []), (state_update, FLA_KERNELS[0]),
                 *([(scatter, SCATTER_KERNEL)] if gathers(case) else [])]
        launches = [launch for launch, _ in steps]
        # Only the rows' conv-state slots and (pool modes) the write slots change.
        restores = [restore_rows(conv_state, read), *([restore_rows(pool.data, write)] if gathers(case) else [])]

        def restore() -> None:
            for put_back in restores:
                put_back()

        conv(validate=True)  # validate the indices once, then run the rest and put it all back
        for launch in launches[1:]:
            launch()
        restore()

        def outputs() -> dict[str, Any]:
            after = pool.data.index_select(0, write) if gathers(case) else result["ht"]
            return {
                "conv_out": conv_out, "conv_state": conv_state, "y": result["o"],
                "start_state": start_rows.float(), "state_after": after,
                "accepted": torch.full_like(workload.accepted, T),
            }

        return Chain(launches, [name for _, name in steps], outputs=outputs, restore=restore,
                     notes=timed_notes(case))

    def bytes_moved(self, case: Case, workload: GDNWorkload | None = None) -> int:
        """The GDN chain's byte model (`gdn.chain_bytes`, what `triton.gdn` reports) plus the traffic
        FLA's API adds (`fla_extra_bytes`): so TB/s and SOL count what this chain moves."""
        return gdn.chain_bytes(case, workload) + fla_extra_bytes(case)


register(FLAGDN())
