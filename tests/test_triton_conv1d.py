"""Triton conv1d update (docs/spec.md §6) against `ssmbench_kernels.conv1d.reference.conv1d_update`, in the CPU
interpreter: production strided input, widths 2..4, bias on/off, padding rows, permuted slots,
partial acceptance offsets, a channel-last state pool, poisoned outputs.

Tolerances: the kernel accumulates in fp32 and rounds the output once to the activation dtype;
the reference accumulates in fp64. bf16 outputs may differ by one bf16 ulp where the fp32 and
fp64 sums straddle a rounding boundary: atol 1e-2 + rtol 2**-7 (one ulp at |out| ~ 1). fp32
outputs: 1e-5. The new conv state is a copy of inputs: exact.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # CPU machines: the interpreter (tests/conftest.py does the same)
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") else "cuda"
"""Where the kernels run: the interpreter on CPU machines; on a GPU machine the same checks run
on the GPU (bit-exactness of the GPU's rounding paths included)."""

from ssmbench_kernels.conv1d.kernel import KERNEL_NAMES, Conv1dKnobs, conv1d_update  # noqa: E402
from ssmbench_kernels.conv1d.reference import conv1d_update as ref_conv1d_update  # noqa: E402

FORMS = ["columns", "flat", "columns+first", "flat+first"]
"""`Conv1dKnobs.form`, ``+first``: with `Conv1dKnobs.loads_first`."""


def _knobs(form: str, **fields) -> Conv1dKnobs:
    return Conv1dKnobs(form=form.removesuffix("+first"), loads_first=form.endswith("+first"), **fields)


TOL = {torch.bfloat16: {"atol": 1e-2, "rtol": 2.0**-7}, torch.float32: {"atol": 1e-5, "rtol": 1e-5}}


def _dev(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(DEVICE)


def _case(batch: int, conv_dim: int, T: int, d_conv: int, n_slots: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    width = d_conv - 2 + T
    xbc = torch.randn(batch * T, conv_dim, generator=g).to(dtype)  # contiguous in_proj output
    state = torch.randn(n_slots, conv_dim, width, generator=g).to(dtype)
    weight = (torch.randn(conv_dim, d_conv, generator=g) * 0.5).float()
    bias = torch.randn(conv_dim, generator=g).float()
    slots = torch.randperm(n_slots, generator=g)[:batch]
    k_prev = torch.randint(1, T + 1, (batch,), generator=g)
    return xbc, state, weight, bias, slots, k_prev


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "d_conv,has_bias,dtype,T",
    [
        (4, True, torch.bfloat16, 3),
        (3, False, torch.bfloat16, 2),
        (2, True, torch.float32, 4),
        (4, False, torch.float32, 1),
    ],
)
def test_conv1d_matches_reference(d_conv: int, has_bias: bool, dtype: torch.dtype, T: int, form: str) -> None:
    batch, conv_dim, n_slots = 4, 40, 7  # conv_dim not a multiple of the block: masked tail
    xbc, state, weight, bias, slots, k_prev = _case(batch, conv_dim, T, d_conv, n_slots, dtype)
    bias = bias if has_bias else None
    slots[1] = -1  # padding row
    x3 = xbc.view(batch, T, conv_dim).transpose(1, 2)  # production view, no copy
    ref_out, ref_state = ref_conv1d_update(x3, state, weight, bias, slots, k_prev)

    out = torch.full((batch * T, conv_dim), float("nan"), dtype=dtype, device=DEVICE)  # poisoned
    st = state.to(DEVICE)
    got = conv1d_update(
        xbc.to(DEVICE),
        st,
        weight.to(DEVICE),
        _dev(bias),
        slots.to(DEVICE),
        k_prev.to(DEVICE),
        T=T,
        out=out,
        knobs=_knobs(form, block_c=16, num_warps=1),
    )
    assert got.data_ptr() == out.data_ptr()
    got3 = got.cpu().view(batch, T, conv_dim).transpose(1, 2)
    st = st.cpu()
    torch.testing.assert_close(got3.double(), ref_out, **TOL[dtype])
    assert (got3[1] == 0).all(), "padding row must output zeros"
    assert torch.equal(st, ref_state), "conv state differs (must be an exact copy of inputs)"


@pytest.mark.parametrize("form", FORMS)
def test_conv1d_channel_last_pool_and_3d_view(form: str) -> None:
    """Any state strides work: a channel-last pool (n_slots, S, conv_dim).transpose(1, 2), and
    the input given as the (batch, conv_dim, T) view."""
    batch, conv_dim, T, d_conv, n_slots = 3, 24, 3, 4, 5
    xbc, state, weight, bias, slots, k_prev = _case(
        batch, conv_dim, T, d_conv, n_slots, torch.bfloat16, seed=3
    )
    x3 = xbc.view(batch, T, conv_dim).transpose(1, 2)
    ref_out, ref_state = ref_conv1d_update(x3, state, weight, bias, slots, k_prev)
    st_cl = state.transpose(1, 2).contiguous().transpose(1, 2).to(DEVICE)  # channel-last storage
    assert st_cl.stride(1) == 1
    x3d = xbc.to(DEVICE).view(batch, T, conv_dim).transpose(1, 2)
    got = conv1d_update(
        x3d, st_cl, weight.to(DEVICE), bias.to(DEVICE), slots.to(DEVICE), k_prev.to(DEVICE), T=T,
        knobs=_knobs(form),
    )
    got3 = got.cpu().view(batch, T, conv_dim).transpose(1, 2)
    torch.testing.assert_close(got3.double(), ref_out, **TOL[torch.bfloat16])
    assert torch.equal(st_cl.cpu(), ref_state)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("T,dtype", [(1, torch.bfloat16), (4, torch.bfloat16), (2, torch.float32), (6, torch.bfloat16)])
def test_conv1d_multi_step_whole_blocks(T: int, dtype: torch.dtype, form: str) -> None:
    """Three decode steps chained on one pool (each step's state is the next one's input), with
    conv_dim a multiple of the block (the unmasked tile path) and rows of 3, 6, 4 and 8 columns
    (GDN's T = 1 and 4 rows are 6 and 12 bytes); slots the batch does not name stay bit-identical."""
    batch, conv_dim, d_conv, n_slots = 3, 48, 4, 6
    _, state, weight, bias, _, _ = _case(batch, conv_dim, T, d_conv, n_slots, dtype, seed=11)
    ref_state, st = state.clone(), state.to(DEVICE)
    g = torch.Generator().manual_seed(12)
    for step in range(3):
        xbc = torch.randn(batch * T, conv_dim, generator=g).to(dtype)
        slots = torch.randperm(n_slots, generator=g)[:batch]
        slots[step % batch] = -1
        k_prev = torch.randint(1, T + 1, (batch,), generator=g)
        ref_out, ref_state = ref_conv1d_update(xbc.view(batch, T, conv_dim).transpose(1, 2), ref_state, weight,
                                               bias, slots, k_prev)
        out = torch.full((batch * T, conv_dim), float("nan"), dtype=dtype, device=DEVICE)
        conv1d_update(xbc.to(DEVICE), st, weight.to(DEVICE), bias.to(DEVICE), slots.to(DEVICE), k_prev.to(DEVICE),
                      T=T, out=out, knobs=_knobs(form, block_c=16, num_warps=1))
        got3 = out.cpu().view(batch, T, conv_dim).transpose(1, 2)
        torch.testing.assert_close(got3.double(), ref_out, **TOL[dtype])
        assert torch.equal(st.cpu(), ref_state), f"conv state differs after step {step}"


def test_conv1d_unknown_knob_values() -> None:
    batch, conv_dim, T, d_conv, n_slots = 1, 16, 1, 4, 2
    xbc, state, weight, bias, slots, k_prev = _case(batch, conv_dim, T, d_conv, n_slots, torch.bfloat16)
    args = (xbc.to(DEVICE), state.to(DEVICE), weight.to(DEVICE), bias.to(DEVICE), slots.to(DEVICE), k_prev.to(DEVICE))
    with pytest.raises(ValueError, match="columns, flat"):
        conv1d_update(*args, T=T, knobs=Conv1dKnobs(form="tiles"))
    with pytest.raises(ValueError, match="first, none"):
        conv1d_update(*args, T=T, knobs=Conv1dKnobs(trigger="early"))
    with pytest.raises(ValueError, match="power of two"):
        conv1d_update(*args, T=T, knobs=Conv1dKnobs(block_c=48))


def test_conv1d_all_padding_and_validation() -> None:
    batch, conv_dim, T, d_conv, n_slots = 2, 16, 2, 4, 4
    xbc, state, weight, bias, slots, k_prev = _case(
        batch, conv_dim, T, d_conv, n_slots, torch.bfloat16, seed=5
    )
    xbc, st, weight, bias, k_prev = (t.to(DEVICE) for t in (xbc, state, weight, bias, k_prev))
    out = conv1d_update(xbc, st, weight, bias, torch.tensor([-1, -1], device=DEVICE), k_prev, T=T)
    assert (out == 0).all() and torch.equal(st.cpu(), state)

    def run(slots, kp=k_prev):
        conv1d_update(xbc, st, weight, bias, torch.tensor(slots, device=DEVICE), kp, T=T)

    with pytest.raises(ValueError, match="duplicate"):
        run([2, 2])
    with pytest.raises(ValueError, match="k_prev"):
        run([0, 1], torch.tensor([0, 1], device=DEVICE))
    with pytest.raises(ValueError, match="out of range"):
        run([0, 9])
    assert KERNEL_NAMES == ("conv1d_update_kernel",)


def test_default_knobs_rule() -> None:
    """`default_conv1d_knobs`: the flat form from 4 state columns, with its tokens loaded first; the
    column form below, without (docs/perf-notes.md, sessions 9 and 15)."""
    from ssmbench_kernels.conv1d.kernel import default_conv1d_knobs

    for T, d_conv, form in ((1, 4, "columns"), (2, 4, "flat"), (6, 4, "flat"), (1, 2, "columns"), (4, 3, "flat")):
        knobs = default_conv1d_knobs(1280, 64, T, d_conv)
        assert (knobs.form, knobs.loads_first) == (form, form == "flat")
