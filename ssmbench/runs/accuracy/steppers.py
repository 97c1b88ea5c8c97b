"""Each impl driven step after step from its own stored state (docs/accuracy.md).

An impl's `Chain` runs one decode step from a freshly built state; a long decode needs the state
to persist: a stepper holds the impl's representation (the intermediate pool, or the checkpoint
replay state with its history ring) across steps and calls the same kernel or reference function
the impl's chain calls, with the SR step counter of each decode step, so rounding noise is drawn
afresh every step. Every stepper starts from the case's start state stored in its format
(`store_states`), on direct slots (row b reads slot b).

An impl may bring its own: an ``accuracy_stepper(case, workload) -> Stepper`` method (a plugin's
kernels, or a test's planted rounding). The shipped ones are in `SHIPPED`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from ssmbench.families.common import store_states
from ssmbench.families.mamba2 import Mamba2Workload, step_inputs
from ssmbench.impls.base import Impl
from ssmbench.spec.case import Case
from ssmbench_kernels.mamba2_replay.reference import ReplayState, new_replay_state, replay_commit, replay_implied_state
from ssmbench_kernels.mamba2_replay.reference import replay_step as replay_step_reference
from ssmbench_kernels.mamba2_states.reference import mamba2_intermediate_step, mamba2_mtp_step
from ssmbench_kernels.storage.reference import StoredState, dequantize, empty_pool, quantize, sr_uniform


class Stepper(Protocol):
    """One impl's state across decode steps. Before each `step` the loop writes the step's
    dt_raw, z and accepted counts into the workload."""

    def step(self, conv_out: torch.Tensor, sr_step: int) -> torch.Tensor:
        """Run one decode step (SR keyed by ``sr_step``) and apply verification's outcome
        (``workload.accepted``); returns y, any shape holding (batch, T, H, P) values."""

    def state(self) -> torch.Tensor:
        """(batch, H, P, N) fp64: the state the next step starts from, read back from the impl's
        own storage (dequantized; checkpoint replay: the checkpoint advanced by its history)."""


def start_pool(case: Case, wl: Mamba2Workload, n_slots: int) -> StoredState:
    """A pool of ``n_slots`` with each row's start state stored (rounded into the case's format)
    at slot b = row b."""
    s = wl.shape
    pool = empty_pool((n_slots, s.nheads, s.head_dim, s.dstate), case.state_dtype, wl.xbc.device)
    rows = torch.arange(case.batch, device=wl.xbc.device)
    pool[rows] = store_states(wl.start_state, rows, case)
    return pool


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """fp8 tensors as their bytes (no fp8 indexing kernels on the CPU)."""
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def copy_slots(pool: StoredState, src: torch.Tensor, dst: torch.Tensor) -> None:
    """pool[dst] = pool[src], stored bytes and scales as they are (no rounding)."""
    data = _bytes(pool.data)
    data.index_copy_(0, dst, data.index_select(0, src))
    if pool.scale is not None:
        pool.scale.index_copy_(0, dst, pool.scale.index_select(0, src))


class SequentialStepper:
    """reference.sequential: the fp64 recurrence from the stored state, the accepted state
    stored back into the row's slot (`store`: the case's rounding, SR keyed by (slot, step))."""

    def __init__(self, case: Case, wl: Mamba2Workload) -> None:
        self.case, self.wl = case, wl
        self.slots = torch.arange(case.batch, device=wl.xbc.device)
        self.pool = start_pool(case, wl, case.batch)

    def store(self, values: torch.Tensor, sr_step: int) -> StoredState:
        """Round the accepted states into the pool's format: the one place a plugin plants another rounding."""
        uniform = None
        if self.case.rounding == "sr":
            uniform = sr_uniform(self.case.seed, self.slots, sr_step, tuple(values.shape[1:])).to(values.device)
        return quantize(values, self.case.state_dtype, self.case.rounding, uniform)

    def step(self, conv_out: torch.Tensor, sr_step: int) -> torch.Tensor:
        y, states = mamba2_mtp_step(self.pool, self.slots, **step_inputs(self.wl, conv_out))
        self.pool[self.slots] = self.store(states[self.slots, self.wl.accepted - 1], sr_step)
        return y

    def state(self) -> torch.Tensor:
        return dequantize(self.pool[self.slots])


class _IntermediateBase:
    """docs/spec.md §5 intermediate: read slot b, store every per-token state to dst[b, t] in the region
    after the read slots; after verification the accepted token's stored state is moved to slot b
    (bytes as stored: what the next step would read from dst[b, k-1])."""

    def __init__(self, case: Case, wl: Mamba2Workload) -> None:
        self.case, self.wl = case, wl
        b, T, dev = case.batch, case.T, wl.xbc.device
        self.src = torch.arange(b, device=dev)
        self.dst = (b + torch.arange(b * T, device=dev)).view(b, T)
        self.pool = start_pool(case, wl, b * (1 + T))

    def accept(self) -> None:
        copy_slots(self.pool, self.dst[self.src, self.wl.accepted - 1], self.src)

    def state(self) -> torch.Tensor:
        return dequantize(self.pool[self.src])


class ReferenceIntermediateStepper(_IntermediateBase):
    """reference.intermediate (`mamba2_intermediate_step`)."""

    def step(self, conv_out: torch.Tensor, sr_step: int) -> torch.Tensor:
        c = self.case
        y, self.pool = mamba2_intermediate_step(self.pool, self.src, self.dst, **step_inputs(self.wl, conv_out),
                                                rounding=c.rounding, seed=c.seed, step=sr_step)
        self.accept()
        return y


class TritonIntermediateStepper(_IntermediateBase):
    """triton.intermediate's state-update kernel (`mamba2_intermediate`), no host checks per step."""

    def __init__(self, case: Case, wl: Mamba2Workload) -> None:
        from ssmbench_kernels.mamba2_states.kernel import default_knobs

        super().__init__(case, wl)
        s = wl.shape
        self.knobs = default_knobs(s, case.batch, case.T, case.state_dtype, case.rounding)
        self.y = torch.empty((case.batch * case.T, s.nheads * s.head_dim), dtype=wl.xbc.dtype, device=wl.xbc.device)

    def step(self, conv_out: torch.Tensor, sr_step: int) -> torch.Tensor:
        from ssmbench_kernels.mamba2_states.kernel import mamba2_intermediate

        c, wl, s = self.case, self.wl, self.wl.shape
        mamba2_intermediate(self.pool.data, self.pool.scale, self.src, self.dst, conv_out, wl.dt_raw, wl.A, wl.D,
                            wl.dt_bias, nheads=s.nheads, head_dim=s.head_dim, dstate=s.dstate, ngroups=s.ngroups,
                            T=c.T, z=wl.z, y=self.y, fmt=c.state_dtype, rounding=c.rounding, seed=c.seed,
                            step=sr_step, pdl=False, knobs=self.knobs, validate=False)
        self.accept()
        return self.y


class _ReplayBase:
    """docs/spec.md §5 checkpoint replay: the checkpoint (slot b) and its history ring, starting empty
    (pnat = 0); the bookkeeping after each step settles pnat into its stationary law."""

    def __init__(self, case: Case, wl: Mamba2Workload) -> None:
        self.case, self.wl = case, wl
        self.slots = torch.arange(case.batch, device=wl.xbc.device)
        self.rs: ReplayState = new_replay_state(start_pool(case, wl, case.batch), case.T, case.window,
                                                wl.shape.ngroups, act_dtype=wl.xbc.dtype, dt_dtype=torch.float32)

    def state(self) -> torch.Tensor:
        return replay_implied_state(self.rs, self.slots, self.wl.A)


class ReferenceReplayStepper(_ReplayBase):
    """reference.replay (auto / fold / rectangle formulation)."""

    def __init__(self, case: Case, wl: Mamba2Workload, formulation: str = "auto") -> None:
        super().__init__(case, wl)
        self.formulation = formulation

    def step(self, conv_out: torch.Tensor, sr_step: int) -> torch.Tensor:
        c = self.case
        y, must_write, stepped = replay_step_reference(self.rs, self.slots, **step_inputs(self.wl, conv_out),
                                                       rounding=c.rounding, seed=c.seed, step=sr_step,
                                                       formulation=self.formulation)
        self.rs = replay_commit(stepped, self.slots, self.wl.accepted, must_write)
        return y


class TritonCheckpointStepper(_ReplayBase):
    """triton.checkpoint's replay kernels (`replay_step`, then the graph-safe `commit`)."""

    def __init__(self, case: Case, wl: Mamba2Workload) -> None:
        from ssmbench_kernels.mamba2_replay.kernel import default_knobs, make_scratch

        super().__init__(case, wl)
        s, b, T = wl.shape, case.batch, case.T
        self.scratch = make_scratch(b, s.nheads, T, case.window, wl.xbc.device)
        self.knobs = default_knobs(b, case.state_dtype, case.rounding, s.head_dim, window=case.window, T=T)
        self.y = torch.empty((b * T, s.nheads * s.head_dim), dtype=wl.xbc.dtype, device=wl.xbc.device)

    def step(self, conv_out: torch.Tensor, sr_step: int) -> torch.Tensor:
        from ssmbench_kernels.mamba2_replay.kernel import commit, replay_step

        c, wl, s = self.case, self.wl, self.wl.shape
        replay_step(self.rs, self.slots, conv_out, wl.dt_raw, wl.A, wl.D, wl.dt_bias, nheads=s.nheads,
                    head_dim=s.head_dim, dstate=s.dstate, ngroups=s.ngroups, T=c.T, y=self.y, scratch=self.scratch,
                    z=wl.z, rounding=c.rounding, seed=c.seed, step=sr_step, pdl=False, knobs=self.knobs,
                    validate=False)
        commit(self.rs, self.slots, wl.accepted, c.T)
        return self.y


def _replay(formulation: str) -> Callable[[Case, Mamba2Workload], Stepper]:
    return lambda case, wl: ReferenceReplayStepper(case, wl, formulation)


StepperFactory = Callable[[Case, Mamba2Workload], Stepper]
SHIPPED: dict[str, StepperFactory] = {
    "reference.sequential": SequentialStepper,
    "reference.intermediate": ReferenceIntermediateStepper,
    "reference.replay": _replay("auto"),
    "reference.replay.fold": _replay("fold"),
    "reference.replay.rectangle": _replay("rectangle"),
    "triton.intermediate": TritonIntermediateStepper,
    "triton.checkpoint": TritonCheckpointStepper,
}
"""Impl name -> its stepper: the impls whose state `ssmbench accuracy` can carry across steps."""


def stepper_factory(impl: Impl) -> StepperFactory | None:
    """The impl's own ``accuracy_stepper`` when it has one, else the shipped stepper of its name."""
    own = getattr(impl, "accuracy_stepper", None)
    if callable(own):
        return own
    return SHIPPED.get(impl.name)


def unsupported_reason(impl: Impl, case: Case) -> str | None:
    """Why ``ssmbench accuracy`` cannot drive ``impl`` on ``case`` (None: it can)."""
    if stepper_factory(impl) is None:
        return f"no multi-step driver (accuracy drives {', '.join(SHIPPED)} and impls with an accuracy_stepper)"
    if case.family != "mamba2":
        return "accuracy runs the Mamba-2 family only"
    if case.option("tree"):
        return "accuracy runs linear chains, not draft trees"
    return None
