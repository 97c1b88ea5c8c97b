"""Conv1d decode update reference (docs/spec.md §6, padding/slots docs/spec.md §3) against a plain causal conv of
the accepted token history."""

from __future__ import annotations

import pytest
import torch

from ssmbench_kernels.conv1d.reference import conv1d_full_history, conv1d_update

CONFIGS = [  # (T, d_conv, bias, activation)
    (1, 4, True, "silu"),
    (2, 2, False, "silu"),
    (3, 3, True, None),
    (4, 4, True, "silu"),
    (5, 3, False, "silu"),
    (6, 4, False, "silu"),
    (7, 2, True, None),
    (8, 4, True, "silu"),
]


def _params(conv_dim: int, d_conv: int, with_bias: bool, g: torch.Generator):
    weight = torch.randn(conv_dim, d_conv, generator=g, dtype=torch.float64)
    bias = torch.randn(conv_dim, generator=g, dtype=torch.float64) if with_bias else None
    return weight, bias


@pytest.mark.parametrize("T,d_conv,with_bias,activation", CONFIGS)
def test_multi_step_equals_full_history(T: int, d_conv: int, with_bias: bool, activation: str | None) -> None:
    """60 steps of random partial acceptance, requests on permuted pool slots, rows shuffled every
    step, a padding row: every output equals the causal conv of (accepted history ++ this step's
    tokens); padding rows give zeros; unused slots and the input pool are never touched."""
    g = torch.Generator().manual_seed(1000 * T + 10 * d_conv + with_bias)
    conv_dim, n_req, n_slots, steps = 6, 4, 9, 60
    weight, bias = _params(conv_dim, d_conv, with_bias, g)
    req_slot = torch.randperm(n_slots, generator=g)[:n_req]
    pool = torch.randn(n_slots, conv_dim, d_conv - 2 + T, generator=g, dtype=torch.float64)
    pool[req_slot] = 0.0  # a fresh request starts from a zero state (= zero left padding)
    hist = [torch.zeros(conv_dim, 0, dtype=torch.float64) for _ in range(n_req)]
    k_prev = [1] * n_req
    accepted_any_partial = False
    for _ in range(steps):
        x_req = torch.randn(n_req, conv_dim, T, generator=g, dtype=torch.float64)
        order = torch.randperm(n_req, generator=g).tolist()
        pad_at = int(torch.randint(0, n_req + 1, (1,), generator=g))
        rows: list[int | None] = order[:pad_at] + [None] + order[pad_at:]
        x = torch.stack(
            [
                torch.randn(conv_dim, T, generator=g, dtype=torch.float64) if r is None else x_req[r]
                for r in rows
            ]
        )
        slot_idx = torch.tensor([-1 if r is None else int(req_slot[r]) for r in rows])
        kp = torch.tensor([99 if r is None else k_prev[r] for r in rows])  # padding k is never read
        before = pool.clone()
        out, new_pool = conv1d_update(x, pool, weight, bias, slot_idx, kp, activation=activation)
        assert torch.equal(pool, before)  # input not mutated
        assert out.shape == (n_req + 1, conv_dim, T) and out.dtype == torch.float64
        assert new_pool.dtype == pool.dtype and new_pool.shape == pool.shape
        assert torch.equal(out[pad_at], torch.zeros(conv_dim, T, dtype=torch.float64))
        unused = torch.ones(n_slots, dtype=torch.bool)
        unused[req_slot] = False
        assert torch.equal(new_pool[unused], pool[unused])
        for row, r in enumerate(rows):
            if r is None:
                continue
            want = conv1d_full_history(torch.cat([hist[r], x_req[r]], dim=1), weight, bias, activation)
            assert (out[row] - want[:, -T:]).abs().max().item() <= 1e-12
            k = int(torch.randint(1, T + 1, (1,), generator=g))
            accepted_any_partial |= k < T
            hist[r] = torch.cat([hist[r], x_req[r][:, :k]], dim=1)
            k_prev[r] = k
        pool = new_pool
    assert accepted_any_partial or T == 1


def test_hand_computed_window_and_offset() -> None:
    """Weight column j multiplies window column j (oldest first, the current token last), and
    k_prev picks the window start: tiny numbers checked by hand."""
    w = torch.tensor([[1.0, 10.0, 100.0]], dtype=torch.float64)  # d_conv = 3
    state = torch.zeros(1, 1, 3, dtype=torch.float64)  # width d_conv - 2 + T = 3 for T = 2
    x = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    slot, k1 = torch.tensor([0]), torch.tensor([1])
    out, state = conv1d_update(x, state, w, None, slot, k1, activation=None)
    assert out.tolist() == [[[100.0, 210.0]]]  # 100*1 ; 10*1 + 100*2
    assert state.tolist() == [[[0.0, 1.0, 2.0]]]
    # previous step accepted only token 0 (k_prev = 1): the window is (0, 1) ++ x
    x2 = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64)
    out, st1 = conv1d_update(x2, state, w, torch.tensor([0.5]), slot, k1, activation=None)
    assert out.tolist() == [[[0.5 + 10 * 1 + 300, 0.5 + 1 * 1 + 30 + 400]]]
    assert st1.tolist() == [[[1.0, 3.0, 4.0]]]
    # both accepted (k_prev = 2): window (1, 2) ++ x
    out, st2 = conv1d_update(x2, state, w, None, slot, torch.tensor([2]), activation=None)
    assert out.tolist() == [[[1 + 20 + 300, 2 + 30 + 400]]]
    assert st2.tolist() == [[[2.0, 3.0, 4.0]]]
    silu, _ = conv1d_update(x2, state, w, None, slot, torch.tensor([2]))
    v = torch.tensor([321.0, 432.0], dtype=torch.float64)
    assert torch.allclose(silu[0, 0], v * torch.sigmoid(v), rtol=0, atol=1e-12)


def test_production_layout_and_dtypes() -> None:
    """x as a column slice of a (batch*T, wide) in_proj output viewed (batch, conv_dim, T) gives the
    same result as a contiguous copy; a bf16 pool stays bf16 and matches the fp64 run exactly."""
    g = torch.Generator().manual_seed(5)
    batch, T, conv_dim, d_conv, wide, first = 5, 4, 12, 4, 40, 7
    weight, bias = _params(conv_dim, d_conv, True, g)
    proj = torch.randn(batch * T, wide, generator=g).to(torch.bfloat16)
    x = proj[:, first : first + conv_dim].view(batch, T, conv_dim).transpose(1, 2)
    assert not x.is_contiguous()
    pool = torch.randn(8, conv_dim, d_conv - 2 + T, generator=g).to(torch.bfloat16)
    slot_idx = torch.tensor([6, -1, 0, 3, 2])
    k_prev = torch.tensor([1, 0, 4, 2, 3])
    out_s, pool_s = conv1d_update(x, pool, weight, bias, slot_idx, k_prev)
    out_c, pool_c = conv1d_update(x.contiguous(), pool, weight, bias, slot_idx, k_prev)
    assert torch.equal(out_s, out_c) and torch.equal(pool_s, pool_c)
    assert pool_s.dtype == torch.bfloat16
    out_d, pool_d = conv1d_update(x.double(), pool.double(), weight, bias, slot_idx, k_prev)
    assert torch.equal(out_s, out_d) and torch.equal(pool_s.double(), pool_d)
    out_32, _ = conv1d_update(x, pool, weight, bias, slot_idx, k_prev, compute_dtype=torch.float32)
    assert out_32.dtype == torch.float32 and torch.allclose(out_32.double(), out_d, rtol=1e-5, atol=1e-5)


def test_validation() -> None:
    conv_dim, T, d_conv = 3, 2, 4
    x = torch.randn(3, conv_dim, T, dtype=torch.float64)
    pool = torch.zeros(4, conv_dim, d_conv - 2 + T, dtype=torch.float64)
    w = torch.randn(conv_dim, d_conv, dtype=torch.float64)
    ok_slots, ok_k = torch.tensor([0, -1, 2]), torch.tensor([1, 0, 2])
    conv1d_update(x, pool, w, None, ok_slots, ok_k)  # padding row's k_prev = 0 is fine
    conv1d_update(x, pool, w, None, torch.tensor([-1, -1, 1]), torch.tensor([1, 1, 1]))  # -1 repeats
    bad_calls = [
        dict(slot_idx=torch.tensor([2, -1, 2])),  # duplicate real slots race
        dict(k_prev=torch.tensor([0, 0, 2])),  # k_prev < 1 on a real row
        dict(k_prev=torch.tensor([1, 0, T + 1])),  # k_prev > T
        dict(slot_idx=torch.tensor([0, -1, 4])),  # slot out of range
        dict(pool=torch.zeros(4, conv_dim, d_conv - 1 + T, dtype=torch.float64)),  # wrong width
        dict(w=torch.randn(conv_dim, 1, dtype=torch.float64)),  # d_conv < 2
        dict(bias=torch.zeros(conv_dim + 1, dtype=torch.float64)),
        dict(activation="relu"),
    ]
    for bad in bad_calls:
        kw = dict(slot_idx=ok_slots, k_prev=ok_k, pool=pool, w=w, bias=None, activation="silu")
        kw.update(bad)
        with pytest.raises(ValueError):
            conv1d_update(
                x, kw["pool"], kw["w"], kw["bias"], kw["slot_idx"], kw["k_prev"], activation=kw["activation"]
            )


def test_full_history_zero_padding() -> None:
    """conv1d_full_history is causal with zero left padding: a future token never changes an
    earlier output, and the first output sees only the last weight."""
    g = torch.Generator().manual_seed(9)
    w, b = _params(4, 3, True, g)
    x = torch.randn(2, 4, 10, generator=g, dtype=torch.float64)
    full = conv1d_full_history(x, w, b, None)
    assert torch.allclose(full[..., 0], b + w[:, -1] * x[..., 0], rtol=0, atol=1e-14)
    x2 = x.clone()
    x2[..., 6:] += 1.0
    assert torch.equal(
        conv1d_full_history(x2, w, b, "silu")[..., :6], conv1d_full_history(x, w, b, "silu")[..., :6]
    )
