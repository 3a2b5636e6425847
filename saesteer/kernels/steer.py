"""Kernel 1: fused latent steering of the residual stream (Triton), for ReLU/JumpReLU/TopK SAEs.

    pre_S = (h − b_dec)·W_enc_S + b_enc_S            [N, s]
    z_S   = pre_S · 1[pre_S > θ]                     θ [s] (JumpReLU; ReLU: θ = 0)
    δ     = relu(z_S + α·v_S) − z_S                  [N, s], float32
    h'    = h + δ·W_dec_S                            [N, d_model]

Two launches, both tiled over rows of h:
  `_steer_delta_kernel`  grid (N/BLOCK_N, s/BLOCK_S): reads an [BLOCK_N, d_model] tile of h and the
                         tile's |S|-block of encoder columns, writes δ (float32, s/d_model of h's size).
  `_steer_apply_kernel`  grid (N/BLOCK_N, d_model/BLOCK_D): h'-tile = h-tile + δ·W_dec_S[:, tile],
                         reading every decoder row of S once per tile.
h is read twice and written once; the encoder/decoder rows of S are read once per row tile. Because
all of δ is known before the second launch starts, writing h' into h (in place) is safe.
Accumulation is float32; h, weights and h' may be float32, float16 or bfloat16 (16-bit operands go
to tensor cores as 16-bit, float32 operands use IEEE float32 dots, not TF32).

TopK SAE: z = topk-relu(pre) needs every latent, so `topk.topk_pre` finds each row's k largest
pre-activations and their latents (no [N, d_sae] written); z_S is read off them (z_i = relu(pre_i)
if latent S_i is among row n's top k, else 0), δ follows in torch on [N, s], then the apply kernel.
Taking z_S from the top-k values themselves, not from recomputing pre_S and comparing it with the
k-th value, keeps the selection exactly the encoder's: no rounding can drop the k-th latent.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from saesteer.kernels.topk import topk_pre


@triton.jit
def _steer_delta_kernel(
    h_ptr, stride_hn,
    b_dec_ptr,
    w_enc_ptr, stride_we_d, stride_we_s,
    b_enc_ptr, theta_ptr, v_ptr,
    delta_ptr, stride_dn,
    alpha, N, D, S,
    JUMP: tl.constexpr,  # False: ReLU, True: JumpReLU (θ per latent)
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """δ[rows, cols] = relu(z + α·v) − z for a [BLOCK_N, BLOCK_S] tile; z from pre over all of d_model."""
    rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    row_ok = rows < N
    col_ok = cols < S
    acc = tl.zeros((BLOCK_N, BLOCK_S), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        d_ok = dd < D
        x = tl.load(
            h_ptr + rows[:, None] * stride_hn + dd[None, :],
            row_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        x = x.to(tl.float32) - tl.load(b_dec_ptr + dd, d_ok, other=0.0).to(tl.float32)[None, :]
        w = tl.load(
            w_enc_ptr + dd[:, None].to(tl.int64) * stride_we_d + cols[None, :] * stride_we_s,
            d_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(x.to(w.dtype), w, acc, input_precision=PRECISION)
    pre = acc + tl.load(b_enc_ptr + cols, col_ok, other=0.0).to(tl.float32)[None, :]
    if JUMP:
        theta = tl.load(theta_ptr + cols, col_ok, other=0.0).to(tl.float32)
        z = tl.where(pre > theta[None, :], pre, 0.0)
    else:
        z = tl.maximum(pre, 0.0)
    v = tl.load(v_ptr + cols, col_ok, other=0.0).to(tl.float32)
    delta = tl.maximum(z + alpha * v[None, :], 0.0) - z
    tl.store(
        delta_ptr + rows[:, None] * stride_dn + cols[None, :],
        delta,
        row_ok[:, None] & col_ok[None, :],
    )


@triton.jit
def _steer_apply_kernel(
    h_ptr, stride_hn,
    delta_ptr, stride_dn,
    w_dec_ptr, stride_wd_s, stride_wd_d,
    out_ptr, stride_on,
    N, D, S,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """out[rows, dd] = h[rows, dd] + δ[rows, :]·W_dec_S[:, dd] for a [BLOCK_N, BLOCK_D] tile."""
    rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    dd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < N
    d_ok = dd < D
    tile_ok = row_ok[:, None] & d_ok[None, :]
    acc = tl.load(h_ptr + rows[:, None] * stride_hn + dd[None, :], tile_ok, other=0.0).to(
        tl.float32
    )
    for s0 in range(0, S, BLOCK_S):
        cols = s0 + tl.arange(0, BLOCK_S)
        col_ok = cols < S
        delta = tl.load(
            delta_ptr + rows[:, None] * stride_dn + cols[None, :],
            row_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        w = tl.load(
            w_dec_ptr + cols[:, None] * stride_wd_s + dd[None, :] * stride_wd_d,
            col_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(delta.to(w.dtype), w, acc, input_precision=PRECISION)
    tl.store(
        out_ptr + rows[:, None] * stride_on + dd[None, :], acc.to(out_ptr.dtype.element_ty), tile_ok
    )


def _block(n: int, lo: int, hi: int) -> int:
    """A power of two covering n, clamped to [lo, hi] (lo ≥ 16: smaller blocks fail on GPUs)."""
    return max(lo, min(hi, triton.next_power_of_2(max(n, 1))))


def _check_steer(h, W_dec_S, v_S, out) -> tuple[int, int, int]:
    """Shape/stride/dtype contract of h, W_dec_S [s, d_model], v_S [s], out; returns (N, d_model, s)."""
    assert h.dim() == 2 and h.stride(1) == 1, "h must be [N, d_model] with unit stride in d_model"
    N, D = h.shape
    S = v_S.shape[0]
    assert v_S.dim() == 1 and W_dec_S.shape == (S, D), (
        f"W_dec_S must be [s={S}, d_model={D}], got {tuple(W_dec_S.shape)}"
    )
    assert out.shape == h.shape and out.stride(1) == 1 and out.dtype == h.dtype, (
        "out must be like h"
    )
    for t in (h, W_dec_S):
        assert t.dtype in (torch.float32, torch.float16, torch.bfloat16), f"unsupported {t.dtype}"
    assert all(t.device == h.device for t in (W_dec_S, v_S, out)), "one device"
    return N, D, S


def launch_configs(N: int, S: int) -> tuple[dict, dict]:
    """Meta-parameters (blocks, num_warps) of the delta and apply kernels for N rows and |S| = S.

    Picked so that sm_90 compiles every variant without register spills (see
    tests/test_kernels_compile.py); not yet tuned by timing on a GPU.
    """
    block_n, block_s = _block(N, 16, 64), _block(S, 16, 64)
    warps = 8 if block_n == 64 else 4
    delta = {"BLOCK_N": block_n, "BLOCK_S": block_s, "BLOCK_D": 32, "num_warps": warps}
    apply = {"BLOCK_N": block_n, "BLOCK_S": block_s, "BLOCK_D": 64, "num_warps": warps}
    return delta, apply


def dot_precision(dtype: torch.dtype) -> str:
    """IEEE float32 dots for float32 operands (not TF32); 16-bit operands ignore the setting."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _apply(h: torch.Tensor, delta: torch.Tensor, W_dec_S: torch.Tensor, out: torch.Tensor):
    """out = h + δ·W_dec_S with δ [N, s] float32 contiguous."""
    N, D = h.shape
    S = delta.shape[1]
    cfg = launch_configs(N, S)[1]
    grid = (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(D, cfg["BLOCK_D"]))
    _steer_apply_kernel[grid](
        h, h.stride(0), delta, delta.stride(0), W_dec_S, W_dec_S.stride(0), W_dec_S.stride(1),
        out, out.stride(0), N, D, S, PRECISION=dot_precision(W_dec_S.dtype), **cfg,
    )  # fmt: skip
    return out


def latent_steer_triton(
    h: torch.Tensor,
    W_enc_S: torch.Tensor,
    b_enc_S: torch.Tensor,
    W_dec_S: torch.Tensor,
    b_dec: torch.Tensor,
    v_S: torch.Tensor,
    alpha: float,
    threshold_S: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """h' [N, d_model] (into `out`, which may be h itself); ReLU when threshold_S is None, else JumpReLU."""
    out = torch.empty_like(h) if out is None else out
    N, D, S = _check_steer(h, W_dec_S, v_S, out)
    assert W_enc_S.shape == (D, S), f"W_enc_S must be [d_model={D}, s], got {tuple(W_enc_S.shape)}"
    assert W_enc_S.dtype == W_dec_S.dtype, "encoder and decoder columns must share a dtype"
    assert b_enc_S.shape == (S,) and b_dec.shape == (D,), "b_enc_S must be [s], b_dec [d_model]"
    assert threshold_S is None or threshold_S.shape == (S,), "threshold_S must be [s]"
    assert all(t.device == h.device for t in (W_enc_S, b_enc_S, b_dec)), "one device"
    if N == 0:
        return out
    delta = torch.empty((N, S), device=h.device, dtype=torch.float32)
    cfg = launch_configs(N, S)[0]
    grid = (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(S, cfg["BLOCK_S"]))
    _steer_delta_kernel[grid](
        h, h.stride(0), b_dec, W_enc_S, W_enc_S.stride(0), W_enc_S.stride(1),
        b_enc_S, v_S if threshold_S is None else threshold_S, v_S, delta, delta.stride(0),
        float(alpha), N, D, S,
        JUMP=threshold_S is not None, PRECISION=dot_precision(W_enc_S.dtype), **cfg,
    )  # fmt: skip
    return _apply(h, delta, W_dec_S, out)


def topk_latent_steer_triton(
    h: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    k: int,
    S: torch.Tensor,
    v_S: torch.Tensor,
    alpha: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """h' for a TopK SAE (see module docstring); S [s] distinct latent indices, v_S [s]."""
    assert S.dim() == 1 and S.dtype in (torch.int32, torch.int64), "S must be [s] integer indices"
    assert v_S.shape == S.shape, "v_S must be [s] like S"
    out = torch.empty_like(h) if out is None else out
    W_dec_S = W_dec.index_select(0, S)
    N, _, s = _check_steer(h, W_dec_S, v_S, out)
    if N == 0:
        return out
    pre, latents = topk_pre(h, W_enc, b_enc, b_dec, k)  # [N, k] float32, [N, k] int64
    slot = torch.full((W_enc.shape[1],), s, device=h.device, dtype=torch.int64)
    slot[S] = torch.arange(s, device=h.device)  # latent → its position in S; s: not in S
    z = torch.zeros((N, s + 1), device=h.device, dtype=torch.float32)
    z = z.scatter_(1, slot[latents], torch.relu(pre))[:, :s]
    delta = (torch.relu(z + alpha * v_S.float()) - z).contiguous()
    return _apply(h, delta, W_dec_S, out)
