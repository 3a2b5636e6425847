"""Kernel 1: fused latent steering of the residual stream (Triton), for ReLU/JumpReLU/TopK SAEs.

    pre_S = (h − b_dec)·W_enc_S + b_enc_S            [N, s]
    z_S   = pre_S · 1[pre_S > θ]                     θ [s] (JumpReLU; ReLU: θ = 0), or for TopK
                                                     z_S = relu(pre_S) · 1[pre_S ≥ τ_n], τ_n = row n's
                                                     k-th largest pre-activation over all d_sae
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
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from saesteer.kernels.topk import row_kth_value


@triton.jit
def _steer_delta_kernel(
    h_ptr, stride_hn,
    b_dec_ptr,
    w_enc_ptr, stride_we_d, stride_we_s,
    b_enc_ptr, theta_ptr, tau_ptr, v_ptr,
    delta_ptr, stride_dn,
    alpha, N, D, S,
    MODE: tl.constexpr,  # 0: ReLU, 1: JumpReLU (θ per latent), 2: TopK (τ per row)
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
    if MODE == 0:
        z = tl.maximum(pre, 0.0)
    elif MODE == 1:
        theta = tl.load(theta_ptr + cols, col_ok, other=0.0).to(tl.float32)
        z = tl.where(pre > theta[None, :], pre, 0.0)
    else:
        tau = tl.load(tau_ptr + rows, row_ok, other=0.0)
        z = tl.where(pre >= tau[:, None], tl.maximum(pre, 0.0), 0.0)
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


def _check_common(h, W_enc_S, W_dec_S, b_dec, v_S, out) -> tuple[int, int, int]:
    """Shape/stride/dtype contract shared by both entry points; returns (N, d_model, s)."""
    assert h.dim() == 2 and h.stride(1) == 1, "h must be [N, d_model] with unit stride in d_model"
    N, D = h.shape
    S = W_enc_S.shape[1]
    assert W_enc_S.shape == (D, S), f"W_enc_S must be [d_model={D}, s], got {tuple(W_enc_S.shape)}"
    assert W_dec_S.shape == (S, D), (
        f"W_dec_S must be [s={S}, d_model={D}], got {tuple(W_dec_S.shape)}"
    )
    assert b_dec.shape == (D,) and v_S.shape == (S,), "b_dec must be [d_model], v_S [s]"
    assert out.shape == h.shape and out.stride(1) == 1 and out.dtype == h.dtype, (
        "out must be like h"
    )
    assert W_enc_S.dtype == W_dec_S.dtype, "encoder and decoder columns must share a dtype"
    for t in (h, W_enc_S, W_dec_S):
        assert t.dtype in (torch.float32, torch.float16, torch.bfloat16), f"unsupported {t.dtype}"
    assert all(t.device == h.device for t in (W_enc_S, W_dec_S, b_dec, v_S, out)), "one device"
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


def _launch(h, W_enc_S, b_enc_S, W_dec_S, b_dec, v_S, alpha, mode, theta, tau, out):
    N, D, S = _check_common(h, W_enc_S, W_dec_S, b_dec, v_S, out)
    if N == 0:
        return out
    precision = dot_precision(W_enc_S.dtype)
    delta = torch.empty((N, S), device=h.device, dtype=torch.float32)
    cfg_delta, cfg_apply = launch_configs(N, S)
    grid = (triton.cdiv(N, cfg_delta["BLOCK_N"]), triton.cdiv(S, cfg_delta["BLOCK_S"]))
    _steer_delta_kernel[grid](
        h, h.stride(0), b_dec, W_enc_S, W_enc_S.stride(0), W_enc_S.stride(1),
        b_enc_S, theta, tau, v_S, delta, delta.stride(0),
        float(alpha), N, D, S, MODE=mode, PRECISION=precision, **cfg_delta,
    )  # fmt: skip
    grid = (triton.cdiv(N, cfg_apply["BLOCK_N"]), triton.cdiv(D, cfg_apply["BLOCK_D"]))
    _steer_apply_kernel[grid](
        h, h.stride(0), delta, delta.stride(0), W_dec_S, W_dec_S.stride(0), W_dec_S.stride(1),
        out, out.stride(0), N, D, S, PRECISION=precision, **cfg_apply,
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
    assert threshold_S is None or threshold_S.shape == v_S.shape, "threshold_S must be [s]"
    mode = 0 if threshold_S is None else 1
    theta = v_S if threshold_S is None else threshold_S  # unread when mode == 0
    return _launch(h, W_enc_S, b_enc_S, W_dec_S, b_dec, v_S, alpha, mode, theta, v_S, out)


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
    """h' for a TopK SAE: τ_n = k-th largest pre-activation of row n (no [N, d_sae] written), then
    the latent steer on S with z_S = relu(pre_S)·1[pre_S ≥ τ_n] (ties at τ_n all count as kept)."""
    assert S.dim() == 1 and S.dtype in (torch.int32, torch.int64), "S must be [s] integer indices"
    out = torch.empty_like(h) if out is None else out
    tau = row_kth_value(h, W_enc, b_enc, b_dec, k)
    W_enc_S, W_dec_S = W_enc.index_select(1, S), W_dec.index_select(0, S)
    return _launch(h, W_enc_S, b_enc[S], W_dec_S, b_dec, v_S, alpha, 2, v_S, tau, out)
