"""Tests for the Gated DeltaNet decode reference (docs/spec.md §9; pools and padding per §3, storage per §8)."""

from __future__ import annotations

import math

import pytest
import torch

from ssmbench_kernels.gdn.reference import GDNStepResult, gdn_decode_step, gdn_recurrence
from ssmbench_kernels.storage.reference import StoredState, dequantize, quantize, sr_uniform

H, HV, K, V = 2, 4, 8, 16
BATCH, T = 5, 3
N_SLOTS = 4 * BATCH
PAD_ROW = 2


def make_inputs(batch: int = BATCH, t: int = T, h: int = H, hv: int = HV, seed: int = 0) -> dict:
    """Random GDN inputs in fp64 (q, k, v, a, b, A_log, dt_bias) with moderate gates."""
    g = torch.Generator().manual_seed(seed)
    f = dict(dtype=torch.float64, generator=g)
    return dict(
        q=torch.randn(batch, t, h, K, **f),
        k=torch.randn(batch, t, h, K, **f),
        v=torch.randn(batch, t, hv, V, **f),
        a=torch.randn(batch, t, hv, **f),
        b=torch.randn(batch, t, hv, **f),
        A_log=torch.log(0.5 + 1.5 * torch.rand(hv, **f)),
        dt_bias=0.5 * torch.randn(hv, **f),
    )


def make_pool(fmt: str = "fp64", n_slots: int = N_SLOTS, seed: int = 1) -> StoredState:
    """A pool of nonzero random states so untouched / overwritten slots are distinguishable."""
    g = torch.Generator().manual_seed(seed)
    return quantize(0.5 * torch.randn(n_slots, HV, V, K, dtype=torch.float64, generator=g), fmt)


def slots(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Permuted read slots (one padding row) and distinct split write slots, all in a 4x pool."""
    perm = torch.randperm(N_SLOTS, generator=torch.Generator().manual_seed(seed))
    read, write = perm[:BATCH].clone(), perm[BATCH : 2 * BATCH].clone()
    read[PAD_ROW] = -1
    return read, write


def naive_gdn(state0, q, k, v, a, b, A_log, dt_bias, scale=None):
    """Per-token, per-head scalar loops over Python floats: an independent code path for docs/spec.md §9."""
    s0, q, k, v, a, b = (x.tolist() for x in (state0, q, k, v, a, b))
    A_log, dt_bias = A_log.tolist(), dt_bias.tolist()
    nb, nt, nh, nk = len(q), len(q[0]), len(q[0][0]), len(q[0][0][0])
    nhv, nv = len(v[0][0]), len(v[0][0][0])
    scale = nk**-0.5 if scale is None else scale
    o = [[[[0.0] * nv for _ in range(nhv)] for _ in range(nt)] for _ in range(nb)]
    states = [[[None] * nhv for _ in range(nt)] for _ in range(nb)]
    for bi in range(nb):
        for hv in range(nhv):
            h = hv // (nhv // nh)
            S = [row[:] for row in s0[bi][hv]]
            for t in range(nt):
                u = a[bi][t][hv] + dt_bias[hv]
                sp = u if u > 20.0 else math.log1p(math.exp(u))
                decay = math.exp(-math.exp(A_log[hv]) * sp)
                beta = 1.0 / (1.0 + math.exp(-b[bi][t][hv]))
                qn = math.sqrt(sum(x * x for x in q[bi][t][h]) + 1e-6)
                kn = math.sqrt(sum(x * x for x in k[bi][t][h]) + 1e-6)
                qh = [x / qn * scale for x in q[bi][t][h]]
                kh = [x / kn for x in k[bi][t][h]]
                for i in range(nv):
                    row = [decay * s for s in S[i]]
                    sk = sum(row[j] * kh[j] for j in range(nk))
                    vn = beta * (v[bi][t][hv][i] - sk)
                    S[i] = [row[j] + vn * kh[j] for j in range(nk)]
                    o[bi][t][hv][i] = sum(S[i][j] * qh[j] for j in range(nk))
                states[bi][t][hv] = [r[:] for r in S]
    return torch.tensor(o, dtype=torch.float64), torch.tensor(states, dtype=torch.float64)


def step(pool, inp, read, write=None, **kw) -> GDNStepResult:
    return gdn_decode_step(pool, **inp, read_idx=read, write_idx=write, **kw)


# --- the recurrence itself -------------------------------------------------------------------------


def test_recurrence_matches_naive_scalar_loops():
    inp = make_inputs(batch=3, t=4)
    # Exercise both softplus branches: u > 20 takes u exactly, u = 19.9 takes log1p(exp(u)). With a
    # small exp(A_log) the decay stays O(1) at u = 20.2, where the two forms differ by exp(-20.2) ~ 2e-9,
    # so a missing threshold moves g by ~3e-11 and fails the 1e-12 tolerance.
    inp["A_log"][2] = math.log(0.02)
    inp["a"][0, 1, 2] = 20.2 - inp["dt_bias"][2]
    inp["a"][1, 2, 0] = 19.9 - inp["dt_bias"][0]
    state0 = 0.5 * torch.randn(3, HV, V, K, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    o, states = gdn_recurrence(state0, **inp)
    o_ref, states_ref = naive_gdn(state0, **inp)
    assert o.shape == (3, 4, HV, V) and states.shape == (3, 4, HV, V, K)
    assert o.dtype == torch.float64
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(states, states_ref, rtol=0, atol=1e-12)
    # The state actually moves (not a trivially decayed / zero state).
    assert (states[:, -1] - state0).abs().max() > 0.1


def test_recurrence_input_dtypes_upcast():
    inp = make_inputs()
    state0 = torch.randn(BATCH, HV, V, K, dtype=torch.float64)
    inp32 = {n: x.to(torch.float32) for n, x in inp.items()}
    o, _ = gdn_recurrence(state0.float(), **inp32)
    o_ref, _ = naive_gdn(state0.float().double(), **{n: x.double() for n, x in inp32.items()})
    assert o.dtype == torch.float64
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-12)


def test_gva_head_mapping_matches_repeat_interleave():
    """hv uses q/k head hv // (HV // H): contiguous blocks, not hv % H."""
    inp = make_inputs()
    state0 = torch.randn(BATCH, HV, V, K, dtype=torch.float64)
    o, st = gdn_recurrence(state0, **inp)
    group = HV // H
    wide = dict(inp, q=inp["q"].repeat_interleave(group, dim=2), k=inp["k"].repeat_interleave(group, dim=2))
    o_w, st_w = gdn_recurrence(state0, **wide)
    torch.testing.assert_close(o, o_w, rtol=0, atol=1e-14)
    torch.testing.assert_close(st, st_w, rtol=0, atol=1e-14)
    # The interleaved (hv % H) mapping gives different results, so the comparison above can fail.
    wrong = dict(inp, q=inp["q"].repeat(1, 1, group, 1), k=inp["k"].repeat(1, 1, group, 1))
    assert (gdn_recurrence(state0, **wrong)[0] - o).abs().max() > 1e-3


def test_gva_perturbing_one_qk_head_moves_only_its_value_heads():
    inp = make_inputs()
    state0 = torch.randn(BATCH, HV, V, K, dtype=torch.float64)
    o, _ = gdn_recurrence(state0, **inp)
    q2, k2 = inp["q"].clone(), inp["k"].clone()
    q2[:, :, 1] = torch.randn_like(q2[:, :, 1])
    k2[:, :, 1] = torch.randn_like(k2[:, :, 1])
    o2, _ = gdn_recurrence(state0, **dict(inp, q=q2, k=k2))
    group = HV // H
    assert torch.equal(o2[:, :, :group], o[:, :, :group])  # value heads of q/k head 0
    assert (o2[:, :, group:] - o[:, :, group:]).abs().amax(dim=(0, 1, 3)).min() > 1e-3


def test_hv_not_multiple_of_h_rejected():
    inp = make_inputs(h=3)
    with pytest.raises(ValueError, match="multiple"):
        gdn_recurrence(torch.zeros(BATCH, HV, V, K, dtype=torch.float64), **inp)


def test_large_gate_is_finite_and_forgets_state():
    """a + dt_bias = 1000 (exp(1000) overflows): results stay finite and the decay underflows to 0, so
    the step equals one from a zero state, in fp64 and fp32 compute."""
    inp = make_inputs(t=1)
    inp["a"] = 1000.0 - inp["dt_bias"].expand_as(inp["a"]).clone()
    state0 = torch.randn(BATCH, HV, V, K, dtype=torch.float64)
    for cd in (torch.float64, torch.float32):
        o, st = gdn_recurrence(state0, **inp, compute_dtype=cd)
        assert torch.isfinite(o).all() and torch.isfinite(st).all()
        o0, st0 = gdn_recurrence(torch.zeros_like(state0), **inp, compute_dtype=cd)
        torch.testing.assert_close(o, o0, rtol=0, atol=0)
        torch.testing.assert_close(st, st0, rtol=0, atol=0)


def test_scale_override():
    inp = make_inputs()
    state0 = torch.randn(BATCH, HV, V, K, dtype=torch.float64)
    o, st = gdn_recurrence(state0, **inp)
    o_def, _ = gdn_recurrence(state0, **inp, scale=K**-0.5)
    assert torch.equal(o, o_def)  # default is K**-0.5
    o_s, st_s = gdn_recurrence(state0, **inp, scale=0.7)
    torch.testing.assert_close(o_s, o * (0.7 / K**-0.5), rtol=1e-12, atol=1e-13)
    assert torch.equal(st_s, st)  # scale touches q only
    torch.testing.assert_close(o_s, naive_gdn(state0, **inp, scale=0.7)[0], rtol=0, atol=1e-12)


# --- pool mode -------------------------------------------------------------------------------------


def expected_states(pool: StoredState, inp: dict, read: torch.Tensor):
    """Recurrence on the real rows' dequantized read states: (rows, o, states)."""
    rows = (read >= 0).nonzero().squeeze(1)
    sub = {n: (x[rows] if x.dim() > 1 else x) for n, x in inp.items()}
    o, st = gdn_recurrence(dequantize(pool[read[rows]]), **sub)
    return rows, o, st


@pytest.mark.parametrize("fmt", ["fp64", "fp32", "bf16"])
def test_single_pool_semantics(fmt):
    pool = make_pool(fmt)
    before = pool.clone()
    inp = make_inputs()
    read, _ = slots()
    # Padding inputs are garbage: they must never reach the output or the pool.
    for n in ("q", "k", "v", "a", "b"):
        inp[n][PAD_ROW] = float("nan")
    res = step(pool, inp, read)
    assert torch.equal(pool.data, before.data)  # input pool not mutated
    rows, o, st = expected_states(before, inp, read)
    assert torch.equal(res.o[rows], o)
    assert torch.equal(res.o[PAD_ROW], torch.zeros_like(res.o[PAD_ROW]))
    assert res.intermediate is None
    written = read[rows]
    assert torch.equal(res.pool.data[written], quantize(st[:, -1], fmt).data)
    assert not torch.equal(res.pool.data[written], before.data[written])
    others = torch.ones(N_SLOTS, dtype=torch.bool)
    others[written] = False
    assert torch.equal(res.pool.data[others], before.data[others])


def test_split_pool_semantics():
    pool = make_pool("fp32")
    before = pool.clone()
    inp = make_inputs()
    read, write = slots()
    write[PAD_ROW] = write[0]  # a padding row's write slot is ignored, even if it duplicates a real one
    res = step(pool, inp, read, write)
    single = step(pool, inp, read)
    rows = (read >= 0).nonzero().squeeze(1)
    assert torch.equal(res.o, single.o)
    assert torch.equal(res.pool.data[write[rows]], single.pool.data[read[rows]])
    changed = torch.zeros(N_SLOTS, dtype=torch.bool)
    changed[write[rows]] = True
    assert torch.equal(res.pool.data[~changed], before.data[~changed])  # read slots included
    assert not torch.equal(res.pool.data[write[rows]], before.data[write[rows]])


@pytest.mark.parametrize("fmt", ["fp64", "fp32", "bf16"])
def test_intermediate_buffer_is_batch_scoped_per_token_states(fmt):
    pool = make_pool(fmt)
    before = pool.clone()
    inp = make_inputs()
    read, _ = slots()
    assert int(read.max()) >= BATCH  # slot-indexing the buffer would go out of range
    res = step(pool, inp, read, intermediate=True, write_final=False)
    assert torch.equal(res.pool.data, before.data)  # write_final=False: pool bit-identical
    inter = res.intermediate
    assert inter.fmt == fmt and inter.shape == (BATCH, T, HV, V, K)
    rows, o, st = expected_states(before, inp, read)
    assert torch.equal(inter.data[rows], quantize(st, fmt).data)
    assert torch.equal(inter.data[PAD_ROW], torch.zeros_like(inter.data[PAD_ROW]))
    assert torch.equal(res.o[rows], o)
    # With the final write on, the written slot holds the last intermediate entry.
    res2 = step(pool, inp, read, intermediate=True, write_final=True)
    assert torch.equal(res2.pool.data[read[rows]], inter.data[rows, -1])


def test_resume_from_intermediate_entry():
    """Accepting k < T tokens: resuming from entry k-1 equals running only the first k tokens."""
    pool = make_pool("fp64")
    inp = make_inputs()
    read, _ = slots()
    res = step(pool, inp, read, intermediate=True, write_final=False)
    k_acc = 2
    first_k = {n: (x[:, :k_acc] if x.dim() > 1 else x) for n, x in inp.items()}
    direct = step(pool, first_k, read)
    rows = (read >= 0).nonzero().squeeze(1)
    torch.testing.assert_close(
        res.intermediate.data[rows, k_acc - 1], direct.pool.data[read[rows]], rtol=0, atol=0
    )


def test_t_token_step_equals_chained_single_token_steps():
    pool = make_pool("fp64")
    inp = make_inputs(t=4)
    read, write = slots()
    full = step(pool, inp, read, write)
    cur, r = pool, read
    for t in range(4):
        tok = {n: (x[:, t : t + 1] if x.dim() > 1 else x) for n, x in inp.items()}
        w = write if t % 2 == 0 else read  # ping-pong between the two slot sets through the pool
        res = step(cur, tok, r, w)
        torch.testing.assert_close(res.o[:, 0], full.o[:, t], rtol=0, atol=1e-12)
        cur, r = res.pool, torch.where(read >= 0, w, read)
    rows = (read >= 0).nonzero().squeeze(1)
    torch.testing.assert_close(cur.data[read[rows]], full.pool.data[write[rows]], rtol=0, atol=1e-12)


def test_all_padding_batch():
    pool = make_pool("fp32")
    res = step(pool, make_inputs(), torch.full((BATCH,), -1), intermediate=True)
    assert torch.equal(res.pool.data, pool.data)
    assert not res.o.any() and not res.intermediate.data.any()


# --- validation ------------------------------------------------------------------------------------


def test_duplicate_real_read_slots_rejected():
    read, _ = slots()
    read[3] = read[0]
    with pytest.raises(ValueError, match="read_idx"):
        step(make_pool(), make_inputs(), read)


def test_duplicate_padding_read_slots_allowed():
    read, _ = slots()
    read[3] = -1
    step(make_pool(), make_inputs(), read)


def test_duplicate_real_write_slots_rejected():
    read, write = slots()
    write[3] = write[0]
    with pytest.raises(ValueError, match="write_idx"):
        step(make_pool(), make_inputs(), read, write)


def test_write_slot_read_by_another_row_rejected():
    read, write = slots()
    write[3] = read[0]
    with pytest.raises(ValueError, match="race"):
        step(make_pool(), make_inputs(), read, write)


def test_negative_write_slot_on_real_row_rejected():
    read, write = slots()
    write[0] = -1
    with pytest.raises(ValueError, match="negative"):
        step(make_pool(), make_inputs(), read, write)


def test_out_of_range_slot_rejected():
    read, _ = slots()
    read[0] = N_SLOTS
    with pytest.raises(ValueError, match="range"):
        step(make_pool(), make_inputs(), read)


# --- storage rounding ------------------------------------------------------------------------------


def test_bf16_storage_rn_within_half_ulp():
    pool = make_pool("bf16")
    inp = make_inputs()
    read, write = slots()
    res = step(pool, inp, read, write, intermediate=True)
    rows, _, st = expected_states(pool, inp, read)
    for stored, exact in ((res.pool[write[rows]], st[:, -1]), (res.intermediate[rows], st)):
        assert stored.data.dtype == torch.bfloat16
        got = dequantize(stored)
        _, e = torch.frexp(got)  # got = m * 2**e, m in [0.5, 1): bf16 ulp = 2**(e - 8)
        half_ulp = torch.ldexp(torch.ones_like(got), e - 9)
        err = (got - exact).abs()
        assert (err <= half_ulp).all()
        assert (err > half_ulp / 4).any()  # actual rounding happened (values not representable)


def test_fp32_storage_is_exact_cast():
    pool = make_pool("fp32")
    inp = make_inputs()
    read, write = slots()
    res = step(pool, inp, read, write, intermediate=True)
    rows, _, st = expected_states(pool, inp, read)
    assert res.pool.data.dtype == torch.float32
    assert torch.equal(res.pool.data[write[rows]], st[:, -1].to(torch.float32))
    assert torch.equal(res.intermediate.data[rows], st.to(torch.float32))


def _sr_available() -> bool:
    try:
        sr_uniform(0, torch.zeros(1, dtype=torch.int64), 0, (2,))
        quantize(torch.ones(2, dtype=torch.float64), "bf16", "sr", torch.zeros(2, dtype=torch.float64))
    except NotImplementedError:
        return False
    return True


@pytest.mark.skipif(not _sr_available(), reason="SR storage not implemented yet")
def test_sr_uniform_keying_and_reproducibility():
    """One draw per request (the read index), shared by the row's T intermediate entries and its
    final pool write (docs/spec.md §8; reference docstring)."""
    pool = make_pool("bf16")
    inp = make_inputs()
    read, write = slots()
    kw = dict(intermediate=True, rounding="sr", seed=123, step=7)
    res = step(pool, inp, read, write, **kw)
    rows, _, st = expected_states(pool, inp, read)
    u_req = sr_uniform(123, read[rows], 7, (HV, V, K))
    assert torch.equal(res.pool.data[write[rows]], quantize(st[:, -1], "bf16", "sr", u_req).data)
    u_int = u_req.unsqueeze(1).expand(-1, T, -1, -1, -1)
    assert torch.equal(res.intermediate.data[rows], quantize(st, "bf16", "sr", u_int).data)
    again = step(pool, inp, read, write, **kw)
    assert torch.equal(again.pool.data, res.pool.data)
    other = step(pool, inp, read, write, **dict(kw, seed=124))
    assert not torch.equal(other.pool.data, res.pool.data)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    pool = make_pool("fp32")
    inp = make_inputs()
    read, write = slots()
    cpu = step(pool, inp, read, write, intermediate=True)
    gpu_pool = StoredState(pool.data.cuda(), None, "fp32")
    gpu = step(gpu_pool, {n: x.cuda() for n, x in inp.items()}, read.cuda(), write.cuda(), intermediate=True)
    torch.testing.assert_close(gpu.o.cpu(), cpu.o, rtol=0, atol=1e-12)
    torch.testing.assert_close(gpu.pool.data.cpu(), cpu.pool.data, rtol=0, atol=0)
