"""FlashInfer's Mamba-2 decode kernels as peer impls, each behind ssmbench's own conv1d so the
chains compare like for like with the Triton ones:

- `flashinfer.ssu`: conv1d -> `flashinfer.mamba.selective_state_update` in multi-token mode,
  every per-token state stored to its own pool slot (2-D ``dst_state_batch_indices``): the
  counterpart of `triton.intermediate`.
- `flashinfer.checkpointing`: conv1d -> `flashinfer.mamba.checkpointing_ssu`, the ring-buffer
  checkpoint replay (auto algorithm: two-kernel precompute + main when batch * nheads fills the
  GPU, else monolithic), PDL-linked to the conv when the case asks: the counterpart of
  `triton.checkpoint`.

flashinfer is an optional dependency (``pip install 'ssmbench[flashinfer]'``): nothing here
imports it until an impl is asked whether it can run a case, so ssmbench works without it and
the sweep skips these impls with the reason. The case-to-API mapping is a pair of pure functions
(`ssu_arguments`, `checkpointing_arguments`) tested on CPU with fake tensors; every case their API
cannot express is refused by `ssu_case_reason` / `checkpointing_case_reason` with the reason.
docs/flashinfer.md has the mapping table and every contract difference.
"""

from __future__ import annotations

from typing import Any

import torch

from ssmbench.families.common import act_bytes
from ssmbench.families.mamba2 import (
    Mamba2Workload,
    checkpoint_chain_bytes,
    intermediate_chain_bytes,
    intermediate_pool,
    replay_state,
)
from ssmbench.impls.base import Chain, Peer, register, snapshot
from ssmbench.impls.optional import OptionalModule
from ssmbench.impls.triton_mamba import ConvHead, per_token_state_outputs
from ssmbench.spec.case import Case
from ssmbench_kernels.conv1d.kernel import KERNEL_NAMES as CONV1D_KERNELS
from ssmbench_kernels.mamba2_replay.reference import ReplayState, replay_commit, replay_implied_state
from ssmbench_kernels.storage.reference import StoredState

FLASHINFER_VERSION = "0.7.2.post1"
INSTALL_HINT = "pip install 'ssmbench[flashinfer]'"
NOT_INSTALLED = f"flashinfer not installed ({INSTALL_HINT})"
MAX_WINDOW = 16
"""checkpointing_ssu's ring holds at most 16 history tokens (max_window <= 16)."""
PHILOX_ROUNDS = 10
"""FlashInfer's default Philox rounds for its (fp16-only) stochastic rounding."""
PAD_SLOT_ID = -1
FP32_FOLD_TOLERANCE = (4e-3, "checkpointing_ssu folds with bf16 tensor-core operands (docs/flashinfer.md)")
"""Declared state tolerance of `flashinfer.checkpointing` on fp32 checkpoints (verify.state_tolerance):
measured 3.6e-4 / 6.0e-4 on the H100; the cases are judged at this bound, timed and flagged."""
SSU_KERNELS = ("selective_state_update_kernel_simple_mtp",)
CHECKPOINTING_KERNELS = ("checkpointing_ssu_precompute_kernel | checkpointing_ssu_kernel",
                         "checkpointing_ssu_main_kernel")
"""Two-kernel mode launches precompute then main; monolithic mode one `checkpointing_ssu_kernel`
(`_8bit` for int8/fp8 state). Informational: the timer attributes every kernel of a sample."""

FLASHINFER = OptionalModule("flashinfer.mamba", "flashinfer", INSTALL_HINT)
"""The optional package, imported on first need (`ssmbench.impls.optional`, the one mechanism
the optional peers share)."""


def flashinfer_mamba() -> Any:
    """The `flashinfer.mamba` module; RuntimeError with the reason when it is unavailable."""
    return FLASHINFER.load()


# ---------------------------------------------------------------------------------------------
# What their API can express (pure functions of the case)
# ---------------------------------------------------------------------------------------------

def _common_reason(case: Case) -> str | None:
    s = case.shape
    if case.option("tree"):
        return "FlashInfer's Mamba kernels take no draft-tree parents (linear chains only)"
    if case.pool == "padded":
        return ("FlashInfer does not write zero outputs for padding rows (slot -1) as docs/spec.md §3 asks: "
                "selective_state_update computes them from a zero state, checkpointing_ssu leaves them unwritten")
    if not 2 <= s.d_conv <= 4:
        return "conv widths 2..4 (ssmbench's conv1d head)"
    ratio = s.nheads // s.ngroups
    if ratio & (ratio - 1) or ratio > 64:
        return f"FlashInfer dispatches nheads/ngroups in 1, 2, 4, ..., 64 (got {ratio})"
    return None


def ssu_case_reason(case: Case) -> str | None:
    """Why `flashinfer.ssu` cannot run ``case`` (None: it can)."""
    if (reason := _common_reason(case)) is not None:
        return reason
    s = case.shape
    if case.state_dtype not in ("fp32", "bf16", "fp16"):
        return (f"selective_state_update stores fp32, bf16 or fp16 states (int16 with block scales): "
                f"no {case.state_dtype}")
    if case.rounding == "sr" and case.state_dtype == "bf16":
        return "FlashInfer's stochastic rounding is fp16-only (PHILOX_ROUNDS needs a half state)"
    if s.head_dim % 16:
        return f"selective_state_update's MTP kernel works on head_dim in passes of 16 rows (head_dim={s.head_dim})"
    if s.dstate % 16 or s.dstate < 64:
        return f"selective_state_update tiles dstate over 8 lanes x 8 values: a multiple of 16, >= 64 ({s.dstate})"
    return None


def checkpointing_case_reason(case: Case) -> str | None:
    """Why `flashinfer.checkpointing` cannot run ``case`` (None: it can)."""
    if case.window is None:
        return "needs a window (checkpoint replay)"
    if (reason := _common_reason(case)) is not None:
        return reason
    s = case.shape
    if case.window > MAX_WINDOW:
        return f"checkpointing_ssu's ring holds at most {MAX_WINDOW} history tokens (window {case.window})"
    if case.act_dtype not in ("bf16", "fp16"):
        return f"checkpointing_ssu takes 2-byte activations (bf16, fp16), not {case.act_dtype}"
    if case.rounding == "sr" and case.state_dtype != "fp32":
        if case.state_dtype in ("int8", "fp8"):
            return f"checkpointing_ssu rounds {case.state_dtype} checkpoints to nearest only (no stochastic rounding)"
        if case.state_dtype == "bf16":
            return "FlashInfer's stochastic rounding is fp16-only (PHILOX_ROUNDS needs a half state)"
    if case.state_dtype in ("int8", "fp8") and s.head_dim != 64:
        return f"checkpointing_ssu's int8/fp8 kernel needs head_dim == 64 (got {s.head_dim})"
    if s.head_dim not in (32, 64):
        return f"checkpointing_ssu's output tile needs head_dim 32 or 64 (got {s.head_dim})"
    if s.dstate % 64:
        return f"checkpointing_ssu replays dstate in pairs of 32-column passes: a multiple of 64 ({s.dstate})"
    return None


def _uses_sr(case: Case) -> bool:
    """FlashInfer gets a seed only where rounding is not exact: SR of an fp16 state (fp32 stores
    are exact, so an fp32 'sr' case stores exactly, like every ssmbench impl)."""
    return case.rounding == "sr" and case.state_dtype == "fp16"


# ---------------------------------------------------------------------------------------------
# The case-to-API mapping (pure: tensors in, keyword arguments out)
# ---------------------------------------------------------------------------------------------

def _per_head(v: torch.Tensor, *tail: int) -> torch.Tensor:
    """A (H,) parameter as FlashInfer's tie_hdim view (H, *tail) with stride 0 past the head."""
    return v.view(-1, *([1] * len(tail))).expand(v.shape[0], *tail)


def _tie_hdim_dt(dt: torch.Tensor, batch: int, T: int, head_dim: int) -> torch.Tensor:
    """(batch*T, H) per-head dt as (batch, T, H, head_dim) with stride 0 over head_dim."""
    return dt.unflatten(0, (batch, T)).unsqueeze(-1).expand(-1, -1, -1, head_dim)


def ssu_arguments(case: Case, workload: Mamba2Workload, *, conv_out: torch.Tensor, state: torch.Tensor,
                  dst: torch.Tensor, y: torch.Tensor, dt: torch.Tensor,
                  rand_seed: torch.Tensor | None) -> dict[str, Any]:
    """Keyword arguments of `flashinfer.mamba.selective_state_update` for one step of ``case``.

    x, B, C are the column views of the (batch*T, conv_dim) conv output (x.stride(2) = head_dim and
    B/C group stride = dstate, as the kernel requires); ``state`` is the (n_slots + batch*T, H, P, N)
    pool, read at ``slot_idx`` and written per token at ``dst`` (batch, T); ``dt`` is the
    (batch*T, H) raw dt in the dtype D and dt_bias are handed over in (FlashInfer ties them to dt's
    dtype: fp32 keeps ssmbench's fp32 parameters exact); ``y`` the (batch*T, H*P) output buffer.
    """
    s, b, T = workload.shape, workload.batch, case.T
    x, B, C = workload.views(conv_out)
    z = None if workload.z is None else workload.z.unflatten(0, (b, T)).unflatten(-1, (s.nheads, s.head_dim))
    return dict(
        state=state, x=x, dt=_tie_hdim_dt(dt, b, T, s.head_dim),
        A=_per_head(workload.A, s.head_dim, s.dstate), B=B, C=C,
        D=_per_head(workload.D.to(dt.dtype), s.head_dim), z=z,
        dt_bias=_per_head(workload.dt_bias.to(dt.dtype), s.head_dim), dt_softplus=True,
        state_batch_indices=workload.slot_idx, dst_state_batch_indices=dst, pad_slot_id=PAD_SLOT_ID,
        out=y.view(b, T, s.nheads, s.head_dim), cache_steps=T,
        rand_seed=rand_seed, philox_rounds=PHILOX_ROUNDS, algorithm="auto",
    )


def flashinfer_ring(rs: ReplayState) -> dict[str, torch.Tensor]:
    """ssmbench's ring (docs/spec.md §5 layout: hist_x (n, L, H, P), hist_B (n, L, G, N), hist_dt (n, L, H),
    int64 ring_start/pnat) in checkpointing_ssu's layout: head-major x_cache (n, H, L, P), B_cache
    (n, G, L, N), fp32 dt_cache (n, H, L), int32 ring_start and prev_num_accepted_tokens. Same
    row semantics: history token j of a slot at ring row (ring_start + j) mod L, L = W + T."""
    return dict(
        x_cache=rs.hist_x.permute(0, 2, 1, 3).contiguous(),
        B_cache=rs.hist_B.permute(0, 2, 1, 3).contiguous(),
        dt_cache=rs.hist_dt.permute(0, 2, 1).contiguous().float(),
        ring_start=rs.ring_start.to(torch.int32),
        prev_num_accepted_tokens=rs.pnat.to(torch.int32),
    )


def ssmbench_ring(ckpt: StoredState, ring: dict[str, torch.Tensor], window: int) -> ReplayState:
    """The inverse of `flashinfer_ring` (views, no copies): FlashInfer's buffers read back as a
    ssmbench ReplayState, so the reference bookkeeping can judge what the kernel left there."""
    return ReplayState(ckpt=ckpt, hist_x=ring["x_cache"].permute(0, 2, 1, 3),
                       hist_B=ring["B_cache"].permute(0, 2, 1, 3), hist_dt=ring["dt_cache"].permute(0, 2, 1),
                       ring_start=ring["ring_start"].long(), pnat=ring["prev_num_accepted_tokens"].long(),
                       window=window)


def checkpointing_arguments(case: Case, workload: Mamba2Workload, *, conv_out: torch.Tensor, ckpt: StoredState,
                            ring: dict[str, torch.Tensor], y: torch.Tensor, rand_seed: torch.Tensor | None,
                            scratch: tuple[torch.Tensor, ...] | None) -> dict[str, Any]:
    """Keyword arguments of `flashinfer.mamba.checkpointing_ssu` for one step of ``case``.

    ``ckpt`` is the checkpoint pool in the case's format (int8/fp8 with its (n, H, P) fp32
    decode scales, docs/spec.md §8's per-row scale), ``ring`` from `flashinfer_ring`; dt goes in the act
    dtype (the kernel converts), D and dt_bias as fp32 tie_hdim views. ``scratch`` (cb_scaled,
    cumAdt_vec, cb_old) makes the two-kernel path available; the auto algorithm picks it when
    batch * nheads fills the GPU. PDL (``enable_pdl``) follows the case.
    """
    s, b, T = workload.shape, workload.batch, case.T
    x, B, C = workload.views(conv_out)
    z = None if workload.z is None else workload.z.unflatten(0, (b, T)).unflatten(-1, (s.nheads, s.head_dim))
    cb_scaled, cumAdt_vec, cb_old = scratch if scratch is not None else (None, None, None)
    return dict(
        state=ckpt.data, **ring,
        x=x, dt=_tie_hdim_dt(workload.dt_raw, b, T, s.head_dim), A=_per_head(workload.A, s.head_dim, s.dstate),
        B=B, C=C, out=y.view(b, T, s.nheads, s.head_dim),
        D=_per_head(workload.D.float(), s.head_dim), z=z, dt_bias=_per_head(workload.dt_bias.float(), s.head_dim),
        dt_softplus=True, state_batch_indices=workload.slot_idx, pad_slot_id=PAD_SLOT_ID,
        state_scale=ckpt.scale, rand_seed=rand_seed, philox_rounds=PHILOX_ROUNDS, enable_pdl=case.pdl,
        cb_scaled=cb_scaled, cumAdt_vec=cumAdt_vec, cb_old=cb_old, algorithm="auto",
    )


# ---------------------------------------------------------------------------------------------
# The impls
# ---------------------------------------------------------------------------------------------

class _FlashInferMamba2(Peer):
    family = "mamba2"
    needs_gpu = True
    package = FLASHINFER

    def case_reason(self, case: Case) -> str | None:
        raise NotImplementedError

    def runs_here(self) -> str | None:
        return None if torch.cuda.is_available() else "FlashInfer's kernels need a CUDA GPU (sm_80+)"


def _seed_tensor(case: Case, device: torch.device) -> torch.Tensor | None:
    return torch.tensor([case.seed], dtype=torch.int64, device=device) if _uses_sr(case) else None


class FlashInferSSU(_FlashInferMamba2):
    """conv1d -> selective_state_update (multi-token, per-token states to pool slots dst[b, t]).

    The kernel has no PDL launch: on pdl=on cases the two kernels run stream-ordered."""

    name = "flashinfer.ssu"

    def case_reason(self, case: Case) -> str | None:
        return ssu_case_reason(case)

    def build(self, case: Case, workload: Mamba2Workload) -> Chain:
        fim = flashinfer_mamba()
        s, b, T = workload.shape, workload.batch, case.T
        head = ConvHead(case, workload, pdl_dependents=False)
        pool, dst = intermediate_pool(case, workload)
        initial = pool.clone()
        y = torch.full((b * T, s.nheads * s.head_dim), float("nan"), dtype=workload.xbc.dtype,
                       device=workload.xbc.device)  # poisoned: unwritten elements show
        dt32 = workload.dt_raw.float()  # exact copy, made once: D/dt_bias then stay fp32
        args = ssu_arguments(case, workload, conv_out=head.conv_out, state=pool.data, dst=dst, y=y, dt=dt32,
                             rand_seed=_seed_tensor(case, workload.xbc.device))

        def state_update() -> None:
            fim.selective_state_update(**args)

        # First call JIT-builds/loads the module (outside any timing); then put back what it mutated.
        head.launch(validate=True)
        state_update()
        head.conv_state.copy_(workload.conv_state)
        pool.data.copy_(initial.data)

        def outputs() -> dict[str, Any]:
            return per_token_state_outputs(head, y, pool, initial, dst, workload)

        # The pool needs no restore: the kernel reads src slots and writes only dst slots.
        return Chain([head.launch, state_update], [*CONV1D_KERNELS, *SSU_KERNELS], outputs=outputs,
                     restore=snapshot(head.conv_state))

    def bytes_moved(self, case: Case, workload: Mamba2Workload | None = None) -> int:
        dt_fp32_extra = case.batch * case.T * case.shape.nheads * (4 - act_bytes(case))  # dt is read as fp32
        return intermediate_chain_bytes(case, workload) + dt_fp32_extra


class FlashInferCheckpointing(_FlashInferMamba2):
    """conv1d -> checkpointing_ssu (ring-buffer checkpoint replay, auto algorithm, PDL per case)."""

    name = "flashinfer.checkpointing"
    uses_window = True

    def case_reason(self, case: Case) -> str | None:
        return checkpointing_case_reason(case)

    def build(self, case: Case, workload: Mamba2Workload) -> Chain:
        fim = flashinfer_mamba()
        s, b, T, W = workload.shape, workload.batch, case.T, case.window
        device = workload.xbc.device
        head = ConvHead(case, workload, pdl_dependents=True)
        # Exactly the reference's replay state (same checkpoint pool, ring starts, pnat, history),
        # then moved into FlashInfer's layout.
        real = workload.slot_idx >= 0
        rs = replay_state(case, workload)
        ckpt = rs.ckpt
        start = replay_implied_state(rs, workload.slot_idx, workload.A)
        ring = flashinfer_ring(rs)
        y = torch.full((b * T, s.nheads * s.head_dim), float("nan"), dtype=workload.xbc.dtype, device=device)
        scratch = tuple(fim.allocate_checkpointing_ssu_scratch(b, s.nheads, T, W, workload.xbc.dtype, device))
        args = checkpointing_arguments(case, workload, conv_out=head.conv_out, ckpt=ckpt, ring=ring, y=y,
                                       rand_seed=_seed_tensor(case, device), scratch=scratch)
        # Only the rows' own slots change: save those and copy them back (device copies only).
        slots = workload.slot_idx[real]
        mutated = (head.conv_state, ckpt.data, ckpt.scale, ring["x_cache"], ring["B_cache"], ring["dt_cache"])
        saved = [(t, t.index_select(0, slots)) for t in mutated if t is not None]

        def restore() -> None:
            for live, rows in saved:
                live.index_copy_(0, slots, rows)

        def state_update() -> None:
            fim.checkpointing_ssu(**args)

        head.launch(validate=True)
        state_update()  # JIT-builds/loads the module outside any timing
        restore()

        def outputs() -> dict[str, Any]:
            after_step = ssmbench_ring(ckpt, ring, W)
            pnat = after_step.pnat[workload.slot_idx.clamp(min=0)]
            must_write = (pnat + T > W) & real
            committed = replay_commit(after_step, workload.slot_idx, workload.accepted, must_write)
            return {
                "conv_out": head.conv_out, "conv_state": head.conv_state,
                "y": y.view(b, T, s.nheads, s.head_dim), "start_state": start,
                "state_after": replay_implied_state(committed, workload.slot_idx, workload.A),
                "accepted": workload.accepted, "must_write": must_write,
                **({"state_tolerance": FP32_FOLD_TOLERANCE} if case.state_dtype == "fp32" else {}),
            }

        return Chain([head.launch, state_update], [*CONV1D_KERNELS, *CHECKPOINTING_KERNELS], outputs=outputs,
                     restore=restore)

    def bytes_moved(self, case: Case, workload: Mamba2Workload | None = None) -> int | None:
        """ssmbench's checkpoint-replay byte model (`mamba2.checkpoint_chain_bytes`, the one
        `triton.checkpoint` reports), so TB/s and SOL compare like for like (it counts the
        necessary traffic, not either impl's scratch). None where the replay kernel module, whose
        default knobs pick the form, cannot be imported (no Triton)."""
        try:
            return checkpoint_chain_bytes(case, workload)
        except ImportError:
            return None


for _impl in (FlashInferSSU(), FlashInferCheckpointing()):
    register(_impl)
