"""FlashInfer's Gated DeltaNet decode as a peer impl, `flashinfer.gdn` (issue 20's item 4): ssmbench's
own conv1d -> `flashinfer.gdn_decode.gated_delta_rule_decode_pretranspose`, so the chain compares like
for like with `triton.gdn` and `fla.gdn`.

Read from FlashInfer 0.7.2.post1's source (docs/gdn.md, "FlashInfer's GDN decode"): the state pool is
``[slots, HV, V, K]`` (K last: ssmbench's layout), rows read ``initial_state_indices`` and write
``output_state_indices`` (our `split` mode), per-token states go to ``intermediate_states_buffer``
``[B, T, HV, V, K]`` (ours) and ``disable_state_update`` skips the final write; q / k l2norm, the
gate ``-exp(A_log) softplus(a + dt_bias)`` and ``beta = sigmoid(b)`` run in the kernel. A bf16
state with K = V = 128 takes its bf16 kernels (T = 1, or its MTP kernel for T > 1); an fp32 state
its legacy T = 1 kernel, or `gated_delta_rule_mtp` for T > 1, both with pool indices. The
``backend="flashinfer"`` argument keeps the generic kernels (not the source-only Cake or the Rubin
ones).

What it cannot express (refused with the reason, `flashinfer_gdn_case_reason`): padding rows (its bf16
kernels read and write pool slot 0 for index -1 and leave the row's output undefined, where docs/spec.md
§3 asks for zero outputs and no slot touched), stochastic rounding (it rounds a bf16 state to
nearest), a bf16 state at other K / V than 128, an fp32 one below 128, activations other than bf16 /
fp16, and T = 1 with per-token states or without the final write (its API takes them for T > 1 only).

The kernels are CuTe DSL (``cutlass``, ``cuda.bindings``): FlashInfer's `gdn_decode` module imports
them, so where they are missing the impl is unavailable with that import error (the H200 machine has
neither in its image; docs/flashinfer.md says how to carry them). The mapping is pure functions
(`flashinfer_gdn_case_reason`, `flashinfer_gdn_arguments`, `timed_notes`) tested on CPU with a fake
module (tests/test_flashinfer_gdn_mapping.py); on the H200 every case of the GDN sweep verified
(session 17, docs/gdn.md).

Its API takes q / k / v as ``[B, T, H, K]`` tensors; as for FLA, the chain copies them out of the
conv output into contiguous buffers (timed: named launches, the notes say so).
"""

from __future__ import annotations

from typing import Any

import torch

from ssmbench.families import gdn
from ssmbench.families.gdn import GDNWorkload
from ssmbench.impls.base import Chain, Peer, register
from ssmbench.impls.fla import COPY_KERNEL, contiguous_inputs, qkv_copier, qkv_copy_bytes
from ssmbench.impls.flashinfer import INSTALL_HINT
from ssmbench.impls.optional import OptionalModule
from ssmbench.impls.triton_gdn import restore_rows
from ssmbench.spec.case import Case
from ssmbench_kernels.conv1d.kernel import KERNEL_NAMES as CONV1D_KERNELS
from ssmbench_kernels.conv1d.kernel import conv1d_update
from ssmbench_kernels.storage.reference import StoredState, dequantize

FLASHINFER_GDN = OptionalModule("flashinfer.gdn_decode", "flashinfer 0.7.2.post1 (its GDN decode: CuTe DSL)",
                                INSTALL_HINT)
"""The optional module: importing it imports FlashInfer's CuTe DSL kernels (``cutlass``)."""
GDN_KERNELS = ("gated_delta_rule decode (FlashInfer CuTe DSL kernels)",)
"""Informational (the timer attributes every kernel of a sample)."""
FORMATS = ("fp32", "bf16")
BF16_DIMS = 128
"""Its bf16-state kernels are built for K = V = 128 only."""
MIN_DIM, V_TILE = 128, 8
"""Its fp32-state kernels (T = 1 and MTP) assert K, V >= 128 and V a multiple of their V tile (8 at T = 1;
the MTP kernel picks its tile by batch, a divisor of V, read from its source)."""


# ---------------------------------------------------------------------------------------------
# What its API can express (pure functions of the case)
# ---------------------------------------------------------------------------------------------

def flashinfer_gdn_case_reason(case: Case) -> str | None:
    """Why `flashinfer.gdn` cannot run ``case`` (None: it can)."""
    s = case.shape
    if case.state_dtype not in FORMATS:
        return "FlashInfer's GDN decode stores an fp32 or bf16 state"
    if case.rounding == "sr":
        return "FlashInfer's GDN decode rounds a bf16 state to nearest (no stochastic rounding)"
    if case.state_dtype == "bf16" and (s.head_k_dim, s.head_v_dim) != (BF16_DIMS, BF16_DIMS):
        return f"FlashInfer's bf16-state GDN kernels need K = V = {BF16_DIMS}"
    if min(s.head_k_dim, s.head_v_dim) < MIN_DIM or s.head_v_dim % V_TILE:
        return f"FlashInfer's fp32-state GDN kernels need K, V >= {MIN_DIM} and V a multiple of {V_TILE}"
    if case.act_dtype not in ("bf16", "fp16"):
        return "FlashInfer's GDN decode takes q / k / v, a and b in bf16 or fp16"
    if case.pool == "padded":
        return ("padding rows: its bf16 kernels read and write pool slot 0 for index -1 and leave the row's output "
                "undefined, where docs/spec.md §3 asks for zero outputs and no slot touched")
    intermediate, write_final = bool(case.option("intermediate", False)), bool(case.option("write_final", True))
    if case.T == 1 and (intermediate or not write_final):
        return "its API takes per-token states and a skipped final write for T > 1 only"
    if not (intermediate or write_final):
        return "stores no state (intermediate and write_final both off): nothing to verify"
    if not 2 <= s.d_conv <= 4:
        return "conv widths 2..4 (ssmbench's conv1d head)"
    return None


def timed_notes(case: Case) -> list[str]:
    """What the timed span holds, for every record of the impl."""
    del case
    return ["timed: conv1d, 3 copies making q/k/v contiguous ([B, T, H, K] tensors), FlashInfer's "
            "gated_delta_rule_decode_pretranspose (backend 'flashinfer') on the pool in place, read and write "
            "slots by index (int32 indices, converted once outside the span)"]


def slot_indices(idx: torch.Tensor) -> torch.Tensor:
    """Pool slot indices as FlashInfer's GDN kernels take them: int32 (its documented type). Its bf16-state
    kernels do not compile with int64 indices (CuTe DSL ``TYPE_UNSTABLE_JOIN``: ``cache_idx`` Int64 on one
    path, Int32 on another; every bf16 case on the H200, 2026-11-30). Converted once when the chain is
    built, outside the timed span, as a caller keeping int32 slot tables would hold them."""
    return idx.to(torch.int32)


def flashinfer_gdn_arguments(case: Case, workload: GDNWorkload, *, q: torch.Tensor, k: torch.Tensor,
                             v: torch.Tensor, pool: torch.Tensor, y: torch.Tensor,
                             inter: torch.Tensor | None) -> dict[str, Any]:
    """Keyword arguments of `gated_delta_rule_decode_pretranspose` for one step of ``case``: q, k
    ``[B, T, H, K]`` and v ``[B, T, HV, V]`` contiguous (`fla.contiguous_inputs`; head hv reads q / k
    head hv // (HV // H), its rule and ours), a and b as ``[B, T, HV]`` views, the pool in place with
    the read and write slots, y as its ``[B, T, HV, V]`` output, the per-token states' buffer and
    the final write's switch."""
    bt = (workload.batch, case.T)
    return dict(
        q=q, k=k, v=v, state=None, A_log=workload.A_log, a=workload.a.unflatten(0, bt), dt_bias=workload.dt_bias,
        b=workload.b.unflatten(0, bt), scale=case.option("scale"), output=y, use_qk_l2norm=True,
        initial_state=pool, initial_state_indices=slot_indices(workload.read_idx),
        output_state_indices=slot_indices(workload.write_idx),
        intermediate_states_buffer=inter, disable_state_update=not case.option("write_final", True),
        backend="flashinfer",
    )


# ---------------------------------------------------------------------------------------------
# The impl
# ---------------------------------------------------------------------------------------------

class FlashInferGDN(Peer):
    """conv1d -> gated_delta_rule_decode_pretranspose on the pool in place. No PDL launch: its
    kernels do not wait on a PDL trigger, so on pdl=on cases the chain runs stream-ordered."""

    name = "flashinfer.gdn"
    family = "gdn"
    needs_gpu = True
    package = FLASHINFER_GDN

    def case_reason(self, case: Case) -> str | None:
        return flashinfer_gdn_case_reason(case)

    def runs_here(self) -> str | None:
        return None if torch.cuda.is_available() else "FlashInfer's GDN kernels need a CUDA GPU (sm_90 or newer)"

    def build(self, case: Case, workload: GDNWorkload) -> Chain:
        fi = FLASHINFER_GDN.load()
        s, batch, T = workload.shape, workload.batch, case.T
        device = workload.qkv.device
        write_final = bool(case.option("write_final", True))
        pool = gdn.state_pool(case, workload)
        start_rows = pool.data.index_select(0, workload.read_idx)
        inter = None
        if case.option("intermediate", False):  # poisoned: an unwritten per-token state shows
            inter = torch.full((batch, T, s.num_v_heads, s.head_v_dim, s.head_k_dim), float("nan"),
                               dtype=pool.data.dtype, device=device)
        conv_state = workload.conv_state.clone()  # updated in place by conv1d
        conv_out = torch.full_like(workload.qkv, float("nan"))
        y = torch.full((batch, T, s.num_v_heads, s.head_v_dim), float("nan"), dtype=workload.qkv.dtype,
                       device=device)
        q, k, v = contiguous_inputs(workload, conv_out)
        args = flashinfer_gdn_arguments(case, workload, q=q, k=k, v=v, pool=pool.data, y=y, inter=inter)

        def conv(validate: bool = False) -> None:
            conv1d_update(workload.qkv, conv_state, workload.conv_weight, None, workload.read_idx, workload.k_prev,
                          T=T, out=conv_out, pdl=False, validate=validate)

        copy_inputs = qkv_copier(workload, conv_out, (q, k, v))

        def decode() -> None:
            fi.gated_delta_rule_decode_pretranspose(**args)

        restores = [restore_rows(conv_state, workload.read_idx),
                    *([restore_rows(pool.data, workload.write_idx)] if write_final else [])]

        def restore() -> None:
            for put_back in restores:
                put_back()

        conv(validate=True)  # validate the indices once, then run the rest and put it all back
        copy_inputs()
        decode()
        restore()

        def outputs() -> dict[str, Any]:
            after, accepted = gdn.state_after(workload, pool.data, inter)
            return {
                "conv_out": conv_out, "conv_state": conv_state, "y": y,
                "start_state": dequantize(StoredState(start_rows, None, case.state_dtype), torch.float32),
                "state_after": after, "accepted": accepted,
            }

        return Chain([conv, copy_inputs, decode], [CONV1D_KERNELS[0], COPY_KERNEL, *GDN_KERNELS], outputs=outputs,
                     restore=restore, notes=timed_notes(case))

    def bytes_moved(self, case: Case, workload: GDNWorkload | None = None) -> int:
        """The GDN chain's byte model (`gdn.chain_bytes`, what `triton.gdn` reports) plus the q / k / v
        copies its API needs (`fla.qkv_copy_bytes`)."""
        return gdn.chain_bytes(case, workload) + qkv_copy_bytes(case)


register(FlashInferGDN())
