"""Kernel 2: sparse TopK-SAE forward and backward for training (Triton + autograd).

With values c [N, k], indices i [N, k] (each row's k active latents) and a dictionary M [d_sae, d]:
    gather-matmul   y[n]    = Σ_j c[n, j] · M[i[n, j]]                      (+ bias)   [N, d]
    gather-dot      gc[n,j] = ⟨g[n], M[i[n, j]]⟩                                       [N, k]
    scatter-outer   gM[e]   = Σ_{(n,j): i[n,j] = e} c[n, j] · g[n]          (atomics)  [d_sae, d]
Sparse decode x̂ = gather-matmul(values, W_dec) + b_dec; its backward is d values = gather-dot(g, W_dec),
d W_dec = scatter-outer(values, g), d b_dec = Σ_n g[n].
TopK encode (values, indices) = relu'd top-k of pre = (x − b_dec)·W_enc + b_enc (see `topk.py`); with
dpre = d values · 1[values > 0], its backward is d W_enc = scatter-outer(dpre, x − b_dec)ᵀ,
d b_enc[e] = Σ dpre at e, d x = gather-matmul(dpre, W_encᵀ), d b_dec = −W_enc · d b_enc.
All sums accumulate in float32; scatter-outer uses float32 atomics, so its summation order (and the
last bits of d W_dec, d W_enc) varies from run to run on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from saesteer.kernels.topk import topk_pre


@triton.jit
def _gather_matmul_kernel(
    c_ptr, idx_ptr, stride_cn,
    m_ptr, stride_me, stride_md,
    bias_ptr, out_ptr, stride_on,
    N, K, D,
    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """out[rows, dd] = Σ_j c[rows, j] · M[i[rows, j], dd] (+ bias[dd])."""
    rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    dd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < N
    d_ok = dd < D
    tile_ok = row_ok[:, None] & d_ok[None, :]
    acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for j in range(0, K):
        c = tl.load(c_ptr + rows * stride_cn + j, row_ok, other=0.0).to(tl.float32)
        e = tl.load(idx_ptr + rows * stride_cn + j, row_ok, other=0).to(tl.int64)
        m = tl.load(
            m_ptr + e[:, None] * stride_me + dd[None, :].to(tl.int64) * stride_md,
            tile_ok,
            other=0.0,
        )
        acc += c[:, None] * m.to(tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + dd, d_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(
        out_ptr + rows[:, None] * stride_on + dd[None, :], acc.to(out_ptr.dtype.element_ty), tile_ok
    )


@triton.jit
def _gather_dot_kernel(
    g_ptr, stride_gn,
    idx_ptr, stride_in,
    m_ptr, stride_me, stride_md,
    out_ptr, N, K, D,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """out[rows, js] = Σ_d g[rows, d] · M[i[rows, js], d]   (out is a contiguous float32 [N, K])."""
    rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    js = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    row_ok = rows < N
    pair_ok = row_ok[:, None] & (js < K)[None, :]
    e = tl.load(idx_ptr + rows[:, None] * stride_in + js[None, :], pair_ok, other=0).to(tl.int64)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        d_ok = dd < D
        g = tl.load(
            g_ptr + rows[:, None] * stride_gn + dd[None, :],
            row_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        m = tl.load(
            m_ptr + e[:, :, None] * stride_me + dd[None, None, :].to(tl.int64) * stride_md,
            pair_ok[:, :, None] & d_ok[None, None, :],
            other=0.0,
        )
        acc += tl.sum(g.to(tl.float32)[:, None, :] * m.to(tl.float32), axis=2)
    tl.store(out_ptr + rows[:, None] * K + js[None, :], acc, pair_ok)


@triton.jit
def _scatter_outer_kernel(
    c_ptr, idx_ptr, stride_cn,
    g_ptr, stride_gn,
    out_ptr, N, K, D,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """out[i[n, j], dd] += c[n, j] · g[n, dd] over a block of BLOCK_M flattened pairs (n, j)
    (out is a contiguous float32 [d_sae, D])."""
    m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    dd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    m_ok = m < N * K
    n = m // K
    j = m % K
    c = tl.load(c_ptr + n * stride_cn + j, m_ok, other=0.0).to(tl.float32)
    e = tl.load(idx_ptr + n * stride_cn + j, m_ok, other=0).to(tl.int64)
    tile_ok = m_ok[:, None] & (dd < D)[None, :]
    g = tl.load(g_ptr + n[:, None] * stride_gn + dd[None, :], tile_ok, other=0.0).to(tl.float32)
    tl.atomic_add(out_ptr + e[:, None] * D + dd[None, :], c[:, None] * g, mask=tile_ok)


# Meta-parameters chosen so that sm_90 compiles without register spills (see
# tests/test_kernels_compile.py); not yet tuned by timing on a GPU.
GATHER_MATMUL_CONFIG = {"BLOCK_N": 16, "BLOCK_D": 128, "num_warps": 4}
GATHER_DOT_CONFIG = {"BLOCK_N": 16, "BLOCK_K": 16, "BLOCK_D": 16, "num_warps": 8}
SCATTER_OUTER_CONFIG = {"BLOCK_M": 16, "BLOCK_D": 128, "num_warps": 4}


def _check_pairs(c: torch.Tensor, idx: torch.Tensor) -> None:
    assert c.dim() == 2 and c.shape == idx.shape, "values and indices must both be [N, k]"
    assert c.is_contiguous() and idx.is_contiguous(), "values and indices must be contiguous"
    assert idx.dtype in (torch.int32, torch.int64), "indices must be int32/int64"


def gather_matmul(
    c: torch.Tensor, idx: torch.Tensor, M: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """y [N, d] = Σ_j c[:, j] · M[idx[:, j]] (+ bias); M [d_sae, d] any strides; y in M's dtype."""
    _check_pairs(c, idx)
    N, K = c.shape
    D = M.shape[1]
    assert bias is None or bias.shape == (D,), "bias must be [d]"
    out = torch.empty((N, D), device=M.device, dtype=M.dtype)
    if N == 0:
        return out
    cfg = GATHER_MATMUL_CONFIG
    grid = (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(D, cfg["BLOCK_D"]))
    _gather_matmul_kernel[grid](
        c, idx, c.stride(0), M, M.stride(0), M.stride(1), bias if bias is not None else M,
        out, out.stride(0), N, K, D, HAS_BIAS=bias is not None, **cfg,
    )  # fmt: skip
    return out


def gather_dot(g: torch.Tensor, idx: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """gc [N, k] float32, gc[n, j] = ⟨g[n], M[idx[n, j]]⟩; g [N, d] with unit stride in d."""
    assert g.dim() == 2 and g.stride(1) == 1 and idx.is_contiguous(), "g [N, d], idx contiguous"
    N, K = idx.shape
    D = M.shape[1]
    out = torch.empty((N, K), device=g.device, dtype=torch.float32)
    cfg = GATHER_DOT_CONFIG
    grid = (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(K, cfg["BLOCK_K"]))
    _gather_dot_kernel[grid](
        g, g.stride(0), idx, idx.stride(0), M, M.stride(0), M.stride(1), out, N, K, D,
        **cfg,
    )  # fmt: skip
    return out


def scatter_outer(c: torch.Tensor, idx: torch.Tensor, g: torch.Tensor, n_rows: int) -> torch.Tensor:
    """gM [n_rows, d] float32, gM[e] = Σ_{idx[n,j] = e} c[n, j] · g[n]; g [N, d] unit stride in d."""
    _check_pairs(c, idx)
    assert g.dim() == 2 and g.stride(1) == 1 and g.shape[0] == c.shape[0], "g must be [N, d]"
    N, K = c.shape
    D = g.shape[1]
    out = torch.zeros((n_rows, D), device=g.device, dtype=torch.float32)
    cfg = SCATTER_OUTER_CONFIG
    grid = (triton.cdiv(N * K, cfg["BLOCK_M"]), triton.cdiv(D, cfg["BLOCK_D"]))
    _scatter_outer_kernel[grid](
        c, idx, c.stride(0), g, g.stride(0), out, N, K, D, **cfg
    )  # fmt: skip
    return out


class SparseDecode(torch.autograd.Function):
    """x̂ [N, d] = Σ_j values[:, j] · W_dec[indices[:, j]] + b_dec, with a sparse backward."""

    @staticmethod
    def forward(ctx, values, indices, W_dec, b_dec):
        assert W_dec.dim() == 2 and b_dec.shape == (W_dec.shape[1],), "W_dec [d_sae, d], b_dec [d]"
        values, indices = values.contiguous(), indices.contiguous()
        ctx.save_for_backward(values, indices, W_dec)
        return gather_matmul(values, indices, W_dec, b_dec)

    @staticmethod
    def backward(ctx, grad_out):
        values, indices, W_dec = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_values = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_values = gather_dot(grad_out, indices, W_dec).to(values.dtype)
        if ctx.needs_input_grad[2]:
            grad_W = scatter_outer(values, indices, grad_out, W_dec.shape[0]).to(W_dec.dtype)
        if ctx.needs_input_grad[3]:
            grad_b = grad_out.sum(0)
        return grad_values, None, grad_W, grad_b


class TopKEncode(torch.autograd.Function):
    """(values [N, k], indices [N, k]) = relu'd top-k of (x − b_dec)·W_enc + b_enc, sparse backward."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, b_dec, k):
        pre, indices = topk_pre(x, W_enc, b_enc, b_dec, k)
        values = torch.relu(pre).to(x.dtype)
        ctx.mark_non_differentiable(indices)
        ctx.save_for_backward(x, W_enc, b_dec, values, indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        x, W_enc, b_dec, values, indices = ctx.saved_tensors
        dpre = (grad_values.float() * (values > 0)).contiguous()
        grad_x = grad_W = grad_b_enc = grad_b_dec = None
        if ctx.needs_input_grad[0]:
            grad_x = gather_matmul(dpre, indices, W_enc.t()).to(x.dtype)
        if ctx.needs_input_grad[1]:
            xc = (x.float() - b_dec.float()).contiguous()
            grad_W = scatter_outer(dpre, indices, xc, W_enc.shape[1]).t().contiguous()
            grad_W = grad_W.to(W_enc.dtype)
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            flat = torch.zeros(W_enc.shape[1], device=x.device, dtype=torch.float32)
            flat.index_add_(0, indices.flatten(), dpre.flatten())
            grad_b_enc = flat.to(W_enc.dtype)
            grad_b_dec = -(W_enc.float() @ flat).to(b_dec.dtype)
        return grad_x, grad_W, grad_b_enc, grad_b_dec, None
