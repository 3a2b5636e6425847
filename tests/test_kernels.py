"""Kernels: Triton against the torch reference, the reference against the dense YaPO formula,
sparse backward against dense autograd, and the dispatch switches.

On a machine without CUDA the Triton kernels run in the Triton interpreter on CPU tensors. Triton
chooses interpreter-or-compiler for every @triton.jit function (its own standard library included)
when the function is defined, so TRITON_INTERPRET=1 must be set before triton is first imported.
This module sets it at import time. If triton was already imported compiled earlier in the same
pytest process (transformer_lens, for one, imports it), the in-process tests skip and
`test_whole_file_in_fresh_interpreter_process` runs this whole file in a fresh subprocess with
TRITON_INTERPRET=1 instead, so the checks always run. The interpreter computes bfloat16 wrongly, so
on CPU bfloat16 inputs are upcast to float32 before the Triton call (on a GPU they go in as
bfloat16). Shapes stay tiny: the interpreter is slow.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

import saesteer.kernels as K  # noqa: E402
from saesteer.kernels import reference as R  # noqa: E402

pytest.importorskip("triton")
DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _triton_interpreted() -> bool:
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


IN_PROCESS = CUDA or _triton_interpreted()
FRESH_PROCESS_TEST = "test_whole_file_in_fresh_interpreter_process"


@pytest.fixture(autouse=True)
def _needs_usable_triton(request):
    if not IN_PROCESS and request.node.name != FRESH_PROCESS_TEST:
        pytest.skip(f"triton was imported compiled before this module; see {FRESH_PROCESS_TEST}")


@pytest.mark.subprocess
def test_whole_file_in_fresh_interpreter_process():
    if IN_PROCESS:
        pytest.skip("Triton kernels are usable in this process; the tests ran here")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


@pytest.fixture(autouse=True)
def _triton_enabled(monkeypatch):
    monkeypatch.delenv("SAESTEER_DISABLE_TRITON", raising=False)


def _grid(*shape, dtype=torch.float32, scale=8):
    """Random values on a 1/scale grid in [-2, 2]: exact in fp16/bf16, so (h − b_dec) and every
    product are exact and both paths see the same pre-activations (no threshold flips)."""
    return (torch.randint(-2 * scale, 2 * scale + 1, shape) / scale).to(DEVICE, dtype)


def _rand(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(shape) * scale).to(DEVICE, dtype)


def _triton_inputs(*tensors):
    """bf16 → fp32 under the interpreter (it computes bf16 wrongly); unchanged on a GPU."""
    if CUDA:
        return tensors
    return tuple(t.float() if t.dtype == torch.bfloat16 else t for t in tensors)


def _tol(dtype):
    return {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]


def _steer_inputs(N, D, s, dtype, seed=0):
    """h, W_enc_S, b_enc_S, W_dec_S, b_dec, v_S, θ_S on the exact grid (see `_grid`)."""
    torch.manual_seed(seed)
    h = _grid(N, D, dtype=dtype)
    W_enc_S = _grid(D, s, dtype=dtype, scale=4) / 4
    W_dec_S = _grid(s, D, dtype=dtype, scale=4) / 4
    return (
        h,
        W_enc_S,
        _grid(s, dtype=dtype),
        W_dec_S,
        _grid(D, dtype=dtype),
        _grid(s),
        _grid(s).abs(),
    )


# (N, d_model, |S|): N = 1, odd sizes, |S| = 1, and |S| > the 64-wide latent block.
STEER_SHAPES = [(1, 48, 1), (7, 33, 5), (19, 70, 67)]


@pytest.mark.parametrize("N,D,s", STEER_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("jump", [False, True], ids=["relu", "jumprelu"])
def test_latent_steer_triton_matches_reference(N, D, s, dtype, jump):
    h, We, be, Wd, bd, v, theta = _steer_inputs(N, D, s, dtype)
    theta = theta if jump else None
    want = R.latent_steer_ref(h, We, be, Wd, bd, v, 1.5, theta)
    args = _triton_inputs(h, We, be, Wd, bd)
    got = K.latent_steer(*args, v, 1.5, theta, backend="triton")
    assert got.shape == h.shape
    torch.testing.assert_close(
        got.to(dtype).float(), want.float(), atol=_tol(dtype) * 8, rtol=_tol(dtype)
    )
    assert not torch.equal(want, h), "the edit must change h"


def test_latent_steer_in_place_with_leading_dims():
    h, We, be, Wd, bd, v, theta = _steer_inputs(2 * 9, 40, 70, torch.float32, seed=1)
    h = h.view(2, 9, 40)
    want = R.latent_steer_ref(h.reshape(-1, 40), We, be, Wd, bd, v, -2.0, theta).view(2, 9, 40)
    target = h.clone()
    got = K.latent_steer(target, We, be, Wd, bd, v, -2.0, theta, out=target, backend="triton")
    assert got.data_ptr() == target.data_ptr()
    torch.testing.assert_close(target, want, atol=1e-4, rtol=1e-4)
    big = torch.zeros(2, 12, 40, device=DEVICE)
    span = big[:, 2:11]  # not viewable as [N, d]: written through a copy
    span.copy_(h)
    K.latent_steer(span, We, be, Wd, bd, v, -2.0, theta, out=span, backend="triton")
    torch.testing.assert_close(big[:, 2:11], want, atol=1e-4, rtol=1e-4)
    assert big[:, :2].abs().sum() == 0 and big[:, 11:].abs().sum() == 0
    ref_target = h.clone()
    K.latent_steer(ref_target, We, be, Wd, bd, v, -2.0, theta, out=ref_target, backend="torch")
    torch.testing.assert_close(ref_target, want)


def test_latent_steer_mixed_dtypes_fp16_stream_fp32_sae():
    h, We, be, Wd, bd, v, theta = _steer_inputs(6, 40, 20, torch.float32, seed=8)
    h16 = h.half()
    want = R.latent_steer_ref(h16, We, be, Wd, bd, v, 1.5, theta)
    got = K.latent_steer(h16, We, be, Wd, bd, v, 1.5, theta, backend="triton")
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, want, atol=1e-2, rtol=1e-3)


def _topk_inputs(N, D, E, dtype, seed=0):
    torch.manual_seed(seed)
    x = _grid(N, D, dtype=dtype)
    W_enc = _rand(D, E, dtype=dtype)
    W_dec = _rand(E, D, dtype=dtype, scale=0.2)
    return x, W_enc, _rand(E, dtype=dtype, scale=0.1), W_dec, _grid(D, dtype=dtype)


@pytest.mark.parametrize("N,D,E,k,s", [(1, 40, 100, 8, 1), (9, 33, 100, 20, 70)])
@pytest.mark.parametrize("dtype", DTYPES if CUDA else DTYPES[:2])  # CPU bf16 = the fp32 run
def test_topk_latent_steer_triton_matches_reference(N, D, E, k, s, dtype):
    h, We, be, Wd, bd = _topk_inputs(N, D, E, dtype)
    active = R.topk_encode_ref(h.float(), We.float(), be.float(), bd.float(), k)[1][0]
    others = torch.randperm(E, device=DEVICE)
    S = torch.cat([active[: (s + 1) // 2], others[~torch.isin(others, active)][: s // 2]])
    v = _grid(len(S))
    want = R.topk_latent_steer_ref(h, We, be, Wd, bd, k, S, v, 1.5)
    got = K.topk_latent_steer(*_triton_inputs(h, We, be, Wd, bd), k, S, v, 1.5, backend="triton")
    torch.testing.assert_close(
        got.to(dtype).float(), want.float(), atol=_tol(dtype) * 8, rtol=_tol(dtype)
    )
    assert not torch.equal(want, h)


@pytest.mark.parametrize("N,E,k", [(1, 64, 1), (5, 100, 17), (3, 100, 40)])
@pytest.mark.parametrize("n_chunks", [None, 1])
def test_topk_candidates_give_exact_topk(N, E, k, n_chunks):
    """n_chunks = 1 merges every tile into one running top-k; None spreads d_sae over programs."""
    from saesteer.kernels.topk import topk_candidates, unpack_keys

    x, We, be, _, bd = _topk_inputs(N, 24, E, torch.float32)
    pre, idx = unpack_keys(topk_candidates(x, We, be, bd, k, n_chunks).topk(k, dim=1).values)
    want_pre = (x - bd) @ We + be
    want_vals, want_idx = want_pre.topk(k, dim=1)
    torch.testing.assert_close(pre, want_vals, atol=1e-5, rtol=1e-5)
    assert torch.equal(idx, want_idx)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_topk_encode_triton_matches_reference(dtype):
    x, We, be, _, bd = _topk_inputs(13, 40, 150, dtype)
    want_v, want_i = R.topk_encode_ref(x.float(), We.float(), be.float(), bd.float(), 9)
    got_v, got_i = K.topk_encode(x, We, be, bd, 9, backend="triton")
    assert got_v.dtype == dtype and got_i.dtype == torch.int64
    assert torch.equal(got_i, want_i)
    torch.testing.assert_close(got_v.float(), want_v, atol=_tol(dtype), rtol=_tol(dtype))


def _dense_decode(values, indices, W_dec, b_dec, d_sae):
    z = torch.zeros(values.shape[0], d_sae, dtype=values.dtype, device=values.device)
    return z.scatter(1, indices, values) @ W_dec + b_dec


def _grads(fn, *leaves):
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    out = fn(*leaves)
    torch.manual_seed(5)
    (out * torch.randn_like(out)).sum().backward()
    return [out.detach(), *[t.grad for t in leaves]]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_sparse_decode_grads_match_dense_autograd(backend):
    torch.manual_seed(2)
    N, k, E, D = 7, 5, 90, 37
    values = _rand(N, k)
    indices = torch.stack([torch.randperm(E)[:k] for _ in range(N)]).to(DEVICE)
    W_dec, b_dec = _rand(E, D), _rand(D)
    got = _grads(
        lambda v, W, b: K.sparse_decode(v, indices, W, b, backend=backend), values, W_dec, b_dec
    )
    want = _grads(lambda v, W, b: _dense_decode(v, indices, W, b, E), values, W_dec, b_dec)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_sparse_decode_reference_gradcheck():
    torch.manual_seed(3)
    values = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    indices = torch.stack([torch.randperm(10)[:4] for _ in range(3)])
    W_dec = torch.randn(10, 5, dtype=torch.float64, requires_grad=True)
    b_dec = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, W, b: R.sparse_decode_ref(v, indices, W, b), (values, W_dec, b_dec)
    )


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_topk_encode_decode_grads_match_dense_autograd(backend):
    """Encode + decode through the public API vs a dense TopK SAE (all five inputs' gradients)."""
    torch.manual_seed(4)
    N, D, E, k = 6, 24, 100, 7
    x, We, be, Wd, bd = _topk_inputs(N, D, E, torch.float32)
    x = _rand(N, D)

    def sparse(x, We, be, Wd, bd):
        values, indices = K.topk_encode(x, We, be, bd, k, backend=backend)
        return K.sparse_decode(values, indices, Wd, bd, backend=backend)

    def dense(x, We, be, Wd, bd):
        return R.topk_act((x - bd) @ We + be, k) @ Wd + bd

    for g, w in zip(
        _grads(sparse, x, We, be, Wd, bd), _grads(dense, x, We, be, Wd, bd), strict=True
    ):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "topk"])
def test_support_restricted_reference_equals_dense_yapo(arch):
    torch.manual_seed(6)
    N, D, E, k = 5, 16, 64, 12
    h, We, be, Wd, bd = (t.double() for t in _topk_inputs(N, D, E, torch.float32))
    S = torch.tensor([0, 3, 17, 40, 63], device=DEVICE)
    v = torch.zeros(E, dtype=torch.float64, device=DEVICE)
    v[S] = torch.tensor([1.0, -2.0, 0.5, 3.0, -0.25], dtype=torch.float64, device=DEVICE)
    theta = torch.rand(E, dtype=torch.float64, device=DEVICE)
    if arch == "topk":
        act = lambda p: R.topk_act(p, k)  # noqa: E731
        got = R.topk_latent_steer_ref(h, We, be, Wd, bd, k, S, v[S], 1.3)
    else:
        th = theta if arch == "jumprelu" else None
        act = lambda p: R.jump_act(p, th)  # noqa: E731
        th_S = None if th is None else th[S]
        got = R.latent_steer_ref(h, We[:, S], be[S], Wd[S], bd, v[S], 1.3, th_S)
    want = R.yapo_dense(h, We, be, Wd, bd, v, 1.3, act)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_alpha_zero_is_exact_and_nonzero_alpha_edits(backend, dtype):
    h, We, be, Wd, bd, v, theta = _steer_inputs(5, 40, 9, dtype, seed=7)
    for th in (None, theta):
        assert torch.equal(K.latent_steer(h, We, be, Wd, bd, v, 0.0, th, backend=backend), h)
        assert not torch.equal(
            K.latent_steer(h, We, be, Wd, bd, v.abs() + 1, 2.0, th, backend=backend), h
        )
    x, We, be, Wd, bd = _topk_inputs(5, 40, 64, dtype)
    S = torch.arange(0, 64, 7, device=DEVICE)
    v = torch.ones(len(S), device=DEVICE)
    assert torch.equal(K.topk_latent_steer(x, We, be, Wd, bd, 6, S, v, 0.0, backend=backend), x)
    assert not torch.equal(K.topk_latent_steer(x, We, be, Wd, bd, 6, S, v, 2.0, backend=backend), x)


def test_disable_switch_forces_reference_for_every_entry_point(monkeypatch):
    import saesteer.kernels.sparse as sparse
    import saesteer.kernels.steer as steer

    def boom(*args, **kwargs):
        raise AssertionError("Triton path used despite SAESTEER_DISABLE_TRITON=1")

    monkeypatch.setattr(steer, "latent_steer_triton", boom)
    monkeypatch.setattr(steer, "topk_latent_steer_triton", boom)
    monkeypatch.setattr(sparse.SparseDecode, "apply", boom)
    monkeypatch.setattr(sparse.TopKEncode, "apply", boom)
    monkeypatch.setenv("SAESTEER_DISABLE_TRITON", "1")
    h, We, be, Wd, bd, v, _ = _steer_inputs(3, 16, 4, torch.float32)
    assert not K.triton_available(h)
    for backend in ("auto", "triton"):
        want = R.latent_steer_ref(h, We, be, Wd, bd, v, 1.0)
        assert torch.equal(K.latent_steer(h, We, be, Wd, bd, v, 1.0, backend=backend), want)
        x, We2, be2, Wd2, bd2 = _topk_inputs(3, 16, 40, torch.float32)
        S = torch.tensor([1, 5], device=DEVICE)
        K.topk_latent_steer(x, We2, be2, Wd2, bd2, 4, S, v[:2], 1.0, backend=backend)
        values, indices = K.topk_encode(x, We2, be2, bd2, 4, backend=backend)
        K.sparse_decode(values, indices, Wd2, bd2, backend=backend)


def test_dispatch_rules(monkeypatch):
    cpu = torch.zeros(2, 4)
    assert not K.triton_available(cpu), "auto never runs the interpreter on CPU tensors"
    assert K.triton_available(cpu.to("cuda")) if CUDA else True
    with pytest.raises(ValueError, match="backend"):
        K.sparse_decode(cpu, cpu.long(), cpu, cpu[0], backend="cuda")
    if CUDA:
        return
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        K.sparse_decode(cpu, cpu.long(), cpu, cpu[0], backend="triton")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_encode_decode_keep_leading_dims(backend):
    x, We, be, Wd, bd = _topk_inputs(6, 24, 64, torch.float32)
    values, indices = K.topk_encode(x.view(2, 3, 24), We, be, bd, 5, backend=backend)
    assert values.shape == indices.shape == (2, 3, 5)
    x_hat = K.sparse_decode(values, indices, Wd, bd, backend=backend)
    want = K.sparse_decode(values.view(6, 5), indices.view(6, 5), Wd, bd, backend="torch")
    torch.testing.assert_close(x_hat, want.view(2, 3, 24), atol=1e-5, rtol=1e-5)


def test_shape_contract_is_checked():
    h, We, be, Wd, bd, v, _ = _steer_inputs(3, 16, 4, torch.float32)
    with pytest.raises(AssertionError, match="W_enc_S"):
        K.latent_steer(h, We.T.contiguous(), be, Wd, bd, v, 1.0, backend="triton")
