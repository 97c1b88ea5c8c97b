"""Property tests for the checkpoint-replay reference (docs/spec.md §5): for any acceptance sequence the
outputs of every step and the implied state equal the sequential reference (docs/spec.md §4) within
storage rounding (docs/spec.md §8); padding and slots per docs/spec.md §3."""

from __future__ import annotations

import pytest
import torch

from ssmbench_kernels.mamba2_replay.reference import (
    ReplayState,
    new_replay_state,
    replay_commit,
    replay_implied_state,
    replay_step,
)
from ssmbench_kernels.mamba2_states.reference import mamba2_mtp_step
from ssmbench_kernels.storage.reference import dequantize, quantize, sr_uniform

H, G, P, N = 4, 2, 8, 16
F64 = torch.float64
N_REQ, BATCH, N_SLOTS = 5, 6, 9  # one padding row per step; 4 pool slots never used
BF16_U = 2.0**-8  # unit roundoff of bf16 (8 significand bits): |RN(v) - v| <= u |v|


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (relative to the reference's scale)."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def make_params(seed: int) -> dict:
    """Per-head fp64 parameters: A < 0, dt_bias giving dt around 0.1-0.3."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        A=-torch.exp(torch.empty(H, dtype=F64).uniform_(-1.0, 0.5, generator=g)),
        D=torch.randn(H, dtype=F64, generator=g),
        dt_bias=-1.5 + 0.3 * torch.randn(H, dtype=F64, generator=g),
    )


def make_tokens(batch: int, t: int, gen: torch.Generator, z: bool = True, act=F64) -> dict:
    """Random per-token inputs; x, B, C, z rounded to ``act`` (values kept in fp64)."""
    f = dict(dtype=F64, generator=gen)

    def r(v: torch.Tensor) -> torch.Tensor:
        return v.to(act).to(F64)

    return dict(
        x=r(torch.randn(batch, t, H, P, **f)),
        dt_raw=0.5 * torch.randn(batch, t, H, **f),
        B=r(torch.randn(batch, t, G, N, **f)),
        C=r(torch.randn(batch, t, G, N, **f)),
        z=r(torch.randn(batch, t, H, P, **f)) if z else None,
    )


def initial_states(seed: int) -> torch.Tensor:
    return torch.randn(N_SLOTS, H, P, N, dtype=F64, generator=torch.Generator().manual_seed(seed))


def assert_rs_equal(a: ReplayState, b: ReplayState, slots: torch.Tensor | None = None) -> None:
    """Bit-identical replay states (restricted to ``slots`` when given)."""
    sl = slice(None) if slots is None else slots
    assert torch.equal(a.ckpt.data[sl], b.ckpt.data[sl])
    for name in ("hist_x", "hist_B", "hist_dt", "ring_start", "pnat"):
        assert torch.equal(getattr(a, name)[sl], getattr(b, name)[sl]), name


def simulate(
    T: int,
    W: int,
    steps: int,
    seed: int,
    fmt: str = "fp64",
    act: torch.dtype = F64,
    dt_dtype: torch.dtype = F64,
    z: bool = True,
    formulations: tuple[str, ...] = ("auto", "fold", "rectangle"),
    device: str = "cpu",
):
    """Decode ``steps`` steps of N_REQ requests (shuffled rows, one padding row with NaN garbage,
    random acceptance k in 1..T) through replay and through the sequential reference; yields per
    step (rows, y_ref, y_by_formulation, must_write, k, true state, implied state, rs_before, rs)."""
    gen = torch.Generator().manual_seed(seed)
    prm = {k: v.to(device) for k, v in make_params(seed).items()}
    own = torch.randperm(N_SLOTS, generator=gen)[:N_REQ]  # permuted pool slots
    init = initial_states(seed + 1)
    rs = new_replay_state(quantize(init.to(device), fmt), T, W, G, act_dtype=act, dt_dtype=dt_dtype)
    seq = quantize(init.to(device), "fp64")  # sequential reference: the true state, exact
    for step in range(steps):
        order = torch.randperm(BATCH, generator=gen)
        req = torch.where(order < N_REQ, order, -1)
        real = req >= 0
        slot = torch.where(real, own[req.clamp_min(0)], -1).to(device)
        tok = make_tokens(BATCH, T, gen, z=z, act=act)
        for v in tok.values():
            if v is not None:
                v[~real] = float("nan")
        tok = {k: (None if v is None else v.to(device)) for k, v in tok.items()}
        y_ref, st_ref = mamba2_mtp_step(seq, slot, **tok, **prm)
        outs = {}
        for f in formulations:
            y, mw, new = replay_step(rs, slot, **tok, **prm, formulation=f, step=step, seed=seed)
            outs[f] = (y, mw, new)
        y_auto, mw, new = outs[formulations[0]]
        for f in formulations[1:]:
            assert torch.equal(outs[f][1], mw)
            assert_rs_equal(outs[f][2], new)  # same checkpoint (from the same S') and ring
        k = torch.randint(1, T + 1, (BATCH,), generator=gen).to(device)
        rs_before = rs
        rs = replay_commit(new, slot, k, mw)
        rows = real.nonzero().squeeze(1).to(device)
        true = st_ref[rows, k[rows] - 1]
        seq.data[slot[rows]] = true
        implied = replay_implied_state(rs, slot, prm["A"])
        yield dict(
            step=step, rows=rows, slot=slot, y_ref=y_ref, y={f: o[0] for f, o in outs.items()}, mw=mw, k=k,
            true=true, implied=implied, rs_before=rs_before, rs=rs, tok=tok, prm=prm,
        )


@pytest.mark.parametrize(("T", "W"), [(1, 1), (1, 16), (2, 16), (3, 3), (4, 16), (6, 16), (8, 8), (8, 16)])
def test_replay_multistep_matches_sequential(T: int, W: int) -> None:
    """>= 50 steps: outputs equal the sequential reference every step (1e-10 relative, exact
    fp64 checkpoints), the three formulations agree, the implied state after every commit equals
    the sequential state after the k-th accepted token; padding rows stay zero and unused slots
    stay bit-identical."""
    n_write = n_nowrite = 0
    rs0 = None
    for s in simulate(T, W, steps=50, seed=10 * T + W):
        rows, slot = s["rows"], s["slot"]
        rs0 = s["rs_before"] if rs0 is None else rs0
        for f, y in s["y"].items():
            assert rel_err(y, s["y_ref"]) < 1e-10, (s["step"], f)
            assert torch.count_nonzero(y[slot < 0]) == 0
        assert rel_err(s["y"]["fold"], s["y"]["rectangle"]) < 1e-12
        assert rel_err(s["implied"][rows], s["true"]) < 1e-10, s["step"]
        assert torch.count_nonzero(s["implied"][slot < 0]) == 0
        assert not s["mw"][slot < 0].any()
        pnat_before = s["rs_before"].pnat[slot[rows]]
        assert torch.equal(s["mw"][rows], pnat_before + T > W)
        assert bool((s["rs"].pnat <= W).all())
        n_write += int(s["mw"].sum())
        n_nowrite += len(rows) - int(s["mw"].sum())
    unused = torch.ones(N_SLOTS, dtype=torch.bool)
    unused[s["rs"].pnat > 0] = False  # every request slot has pnat >= 1 after a commit
    assert int(unused.sum()) == N_SLOTS - N_REQ
    assert_rs_equal(s["rs"], rs0, unused)
    assert n_write > 0 and n_nowrite > 0  # both branches exercised


@pytest.mark.parametrize(("T", "W"), [(2, 16), (4, 16), (4, 4)])
def test_replay_bf16_checkpoint_error_bounded(T: int, W: int) -> None:
    """bf16 RN checkpoints, bf16 history, fp32 dt (production dtypes). Rounding happens only at a
    store, and decays are <= 1, so elementwise

        |implied - true| <= e,  e <- a_t e per accepted token,  e <- e + u (|S_true| + e) per store,

    with u = 2^-8 (plus 1e-6 max|S| slack for the fp32 dt). Outputs: |y - y_ref| <= sum_n e |C|
    (no z). The error must also be nonzero (the checkpoint really is rounded)."""
    prm_a = make_params(7 * T + W)["A"]
    init = initial_states(7 * T + W + 1)  # what simulate() starts from
    bound = (init - init.to(torch.bfloat16).to(F64)).abs()  # the initial checkpoint is rounded too
    true_now = init.clone()
    saw_error = False
    for s in simulate(T, W, steps=50, seed=7 * T + W, fmt="bf16", act=torch.bfloat16, dt_dtype=torch.float32,
                      z=False, formulations=("auto", "rectangle")):
        rows, slot, k, mw = s["rows"], s["slot"], s["k"], s["mw"]
        sl = slot[rows]
        e = bound[sl]
        wr = mw[rows]
        e = torch.where(wr[:, None, None, None], e + BF16_U * (true_now[sl].abs() + e), e)
        slack = 1e-6 * s["true"].abs().max()
        C = s["tok"]["C"][rows][:, :, torch.arange(H) // (H // G)]  # (n, T, H, N)
        y_bound = torch.einsum("bhpn,bthn->bthp", e, C.abs()) + slack
        for y in s["y"].values():
            assert bool(((y[rows] - s["y_ref"][rows]).abs() <= y_bound).all()), s["step"]
        # write rows output from the unrounded S', so the formulations agree to fp64 roundoff
        assert rel_err(s["y"]["auto"], s["y"]["rectangle"]) < 1e-12
        dt = torch.nn.functional.softplus(s["tok"]["dt_raw"][rows] + s["prm"]["dt_bias"])
        a = torch.exp(prm_a * dt)  # (n, T, H)
        keep = torch.arange(T)[None, :] < k[rows][:, None]
        decay = torch.where(keep[..., None], a, 1.0).prod(dim=1)  # (n, H)
        e = e * decay[..., None, None]
        err = (s["implied"][rows] - s["true"]).abs()
        assert bool((err <= e + slack).all()), s["step"]
        saw_error |= bool((err > 1e3 * slack).any())
        bound[sl] = e
        true_now[sl] = s["true"]
    assert saw_error


def test_softplus_branch_no_nan_in_replay() -> None:
    """dt_raw + dt_bias = 1000 on every token: finite outputs and states, equal to the sequential
    reference (docs/spec.md §4 branch select before exp)."""
    prm = make_params(1)
    T, W = 3, 4
    init = initial_states(2)
    rs = new_replay_state(quantize(init, "fp64"), T, W, G)
    slot = torch.tensor([3, -1, 0, 5])
    seq = quantize(init, "fp64")
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        tok = make_tokens(4, T, gen)
        tok["dt_raw"] = 1000.0 - prm["dt_bias"].expand(4, T, H).clone()
        y_ref, st_ref = mamba2_mtp_step(seq, slot, **tok, **prm)
        y, mw, rs = replay_step(rs, slot, **tok, **prm, formulation=("auto", "fold", "rectangle")[step])
        assert torch.isfinite(y).all() and rel_err(y, y_ref) < 1e-12
        k = torch.full((4,), 2)
        rs = replay_commit(rs, slot, k, mw)
        seq.data[slot[slot >= 0]] = st_ref[slot >= 0, 1]
        implied = replay_implied_state(rs, slot, prm["A"])
        assert torch.isfinite(implied).all() and rel_err(implied[slot >= 0], st_ref[slot >= 0, 1]) < 1e-12


def fill_history(rs: ReplayState, seed: int) -> ReplayState:
    """Random history rows (dt ~ 0.1-0.3) so a fold really changes the checkpoint."""
    g = torch.Generator().manual_seed(seed)
    rs.hist_x.copy_(torch.randn(rs.hist_x.shape, dtype=F64, generator=g))
    rs.hist_B.copy_(torch.randn(rs.hist_B.shape, dtype=F64, generator=g))
    rs.hist_dt.copy_(0.1 + 0.2 * torch.rand(rs.hist_dt.shape, dtype=F64, generator=g))
    return rs


def small_case(T: int = 2, W: int = 4):
    prm = make_params(3)
    rs = fill_history(new_replay_state(quantize(initial_states(4), "fp64"), T, W, G), 6)
    tok = make_tokens(4, T, torch.Generator().manual_seed(5))
    return prm, rs, tok


def test_replay_padding_rows_touch_nothing() -> None:
    prm, rs, tok = small_case()
    slot = torch.full((4,), -1)
    y, mw, new = replay_step(rs, slot, **tok, **prm)
    assert torch.count_nonzero(y) == 0 and not mw.any()
    assert_rs_equal(new, rs)
    assert_rs_equal(replay_commit(new, slot, torch.zeros(4, dtype=torch.int64), mw), rs)
    assert torch.count_nonzero(replay_implied_state(rs, slot, prm["A"])) == 0


def test_replay_step_does_not_mutate_input() -> None:
    prm, rs, tok = small_case()
    before = rs.clone()
    slot = torch.tensor([1, 7, -1, 4])
    y, mw, new = replay_step(rs, slot, **tok, **prm)
    assert_rs_equal(rs, before)
    assert not torch.equal(new.hist_x, rs.hist_x)  # the new tokens did land in the copy


def test_replay_validation() -> None:
    prm, rs, tok = small_case(T=2, W=4)
    with pytest.raises(ValueError, match="duplicate"):
        replay_step(rs, torch.tensor([1, 3, -1, 3]), **tok, **prm)
    with pytest.raises(ValueError, match="duplicate"):
        replay_implied_state(rs, torch.tensor([2, 2]), prm["A"])
    with pytest.raises(ValueError, match="range"):
        replay_step(rs, torch.tensor([1, 3, -1, N_SLOTS]), **tok, **prm)
    with pytest.raises(ValueError, match="sized for T=2"):
        replay_step(rs, torch.tensor([1, 3]), **make_tokens(2, 3, torch.Generator()), **prm)
    with pytest.raises(ValueError, match="formulation"):
        replay_step(rs, torch.tensor([1, 3, -1, 0]), **tok, **prm, formulation="square")
    slot = torch.tensor([1, 3, -1, 0])
    _, mw, new = replay_step(rs, slot, **tok, **prm)
    for k in (0, 3):
        with pytest.raises(ValueError, match="accepted"):
            replay_commit(new, slot, torch.tensor([1, k, 1, 1]), mw)
    with pytest.raises(ValueError, match="must_write"):
        replay_commit(new, slot, torch.tensor([1, 1, 1, 1]), ~mw)
    bad = rs.clone()
    bad.pnat[2] = rs.window + 1  # would let new tokens overwrite history being read
    with pytest.raises(ValueError, match="pnat"):
        replay_step(bad, slot, **tok, **prm)
    with pytest.raises(ValueError, match="window >= T"):
        new_replay_state(quantize(initial_states(0), "fp64"), 5, 4, G)


def test_replay_ring_rows_and_bookkeeping() -> None:
    """New tokens land at (ring_start + pnat + i) mod L, wrapping; commit moves ring_start/pnat."""
    prm, rs, tok = small_case(T=2, W=4)  # L = 6
    rs.ring_start[:] = torch.tensor([5, 0, 3, 4, 1, 2, 0, 5, 3])
    rs.pnat[:] = torch.tensor([0, 1, 2, 3, 4, 2, 0, 3, 1])
    # (start, pnat) per row: (5, 0) nowrite, (4, 3) write, (1, 4) write, (2, 2) nowrite
    slot = torch.tensor([0, 3, 4, 5])
    y, mw, new = replay_step(rs, slot, **tok, **prm)
    assert mw.tolist() == [False, True, True, False]
    expect_rows = {0: [5, 0], 3: [1, 2], 4: [5, 0], 5: [4, 5]}
    for b, sl in enumerate(slot.tolist()):
        assert torch.equal(new.hist_x[sl, expect_rows[sl]], tok["x"][b])
        assert torch.equal(new.hist_B[sl, expect_rows[sl]], tok["B"][b])
        others = [r for r in range(6) if r not in expect_rows[sl]]
        assert torch.equal(new.hist_x[sl, others], rs.hist_x[sl, others])
    # write rows stored a new checkpoint, nowrite rows did not
    assert torch.equal(new.ckpt.data[[0, 5]], rs.ckpt.data[[0, 5]])
    for sl in (3, 4):
        assert not torch.equal(new.ckpt.data[sl], rs.ckpt.data[sl])
    c = replay_commit(new, slot, torch.tensor([1, 2, 1, 2]), mw)
    assert c.ring_start[[0, 3, 4, 5]].tolist() == [5, (4 + 3) % 6, (1 + 4) % 6, 2]
    assert c.pnat[[0, 3, 4, 5]].tolist() == [1, 2, 1, 4]


def test_replay_sr_checkpoint_keyed_by_slot_and_step() -> None:
    try:
        sr_uniform(0, torch.tensor([0]), 0, (1,))
    except NotImplementedError:
        pytest.skip("stochastic rounding not implemented in storage yet")
    prm = make_params(3)
    T, W = 2, 2
    init = initial_states(4)
    rs = fill_history(new_replay_state(quantize(init, "bf16"), T, W, G), 8)
    rs.pnat[:] = 1  # every slot writes: pnat + T > W
    slot = torch.tensor([6, -1, 2, 0])
    tok = make_tokens(4, T, torch.Generator().manual_seed(5))
    _, mw, a = replay_step(rs, slot, **tok, **prm, rounding="sr", seed=3, step=9)
    _, _, b = replay_step(rs, slot, **tok, **prm, rounding="sr", seed=3, step=9)
    _, _, c = replay_step(rs, slot, **tok, **prm, rounding="sr", seed=3, step=10)
    assert mw.tolist() == [True, False, True, True]
    assert torch.equal(a.ckpt.data, b.ckpt.data) and not torch.equal(a.ckpt.data, c.ckpt.data)
    real = slot[slot >= 0]
    S = replay_implied_state(rs, real, prm["A"])  # the unrounded fold S'
    expect = quantize(S, "bf16", "sr", sr_uniform(3, real, 9, (H, P, N)))
    assert torch.equal(a.ckpt.data[real], expect.data)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_replay_on_cuda_matches_sequential() -> None:
    for s in simulate(4, 16, steps=20, seed=3, device="cuda"):
        assert s["implied"].is_cuda
        for y in s["y"].values():
            assert rel_err(y, s["y_ref"]) < 1e-10
        assert rel_err(s["implied"][s["rows"]], s["true"]) < 1e-10


def test_dequantized_fp64_pool_is_exact() -> None:
    """The property tests rely on fmt "fp64" storing states exactly."""
    v = initial_states(0)
    assert torch.equal(dequantize(quantize(v, "fp64")), v)
