"""Steering in SAE latent space: the YaPO edit, its support-restricted form, and clamping.

With an SAE (pre = (h − b_dec)·W_enc + b_enc, z = act(pre), x̂ = z·W_dec + b_dec) and a code v [d_sae]:

    z  = encode(h)
    z' = relu(z + α · v)
    h' = h + (z' − z) · W_dec  =  decode(z') + (h − decode(z))        (the SAE error is kept)

For ReLU, JumpReLU and BatchTopK-at-inference (a JumpReLU) SAEs, z_i depends only on encoder column
i, and z'_i − z_i = 0 wherever v_i = 0 (z ≥ 0). So with S = supp(v) only |S| columns and rows are used:

    pre_S = (h − b_dec) · W_enc[:, S] + b_enc[S]                  [N, |S|]
    z_S   = relu(pre_S)            (ReLU)   or   pre_S · 1[pre_S > θ_S]   (JumpReLU)
    h'    = h + (relu(z_S + α · v_S) − z_S) · W_dec[S]             [N, d]

That costs O(|S| · d) per token instead of O(d_sae · d); `saesteer.kernels.latent_steer` computes it
(fused Triton on CUDA, torch elsewhere). TopK SAEs need the full encode (whether latent i survives
depends on the k-th largest pre-activation): `saesteer.kernels.topk_latent_steer`.
`full_latent_steer` is the unrestricted formula, differentiable in v (used for training).

Clamping (manual feature steering) moves the chosen latents towards target values c_S:

    z'_S = z_S + α · (c_S − z_S)        α = 0: identity; α = 1: z_S clamped to c_S exactly
"""

from __future__ import annotations

import torch


def latent_codes(
    h: torch.Tensor,
    W_enc_S: torch.Tensor,
    b_enc_S: torch.Tensor,
    b_dec: torch.Tensor,
    threshold_S: torch.Tensor | None,
) -> torch.Tensor:
    """z_S [N, s] of the support latents: relu(pre_S), or pre_S · 1[pre_S > θ_S] with thresholds."""
    pre = (h - b_dec) @ W_enc_S + b_enc_S
    return torch.relu(pre) if threshold_S is None else pre * (pre > threshold_S)


def latent_clamp(
    h: torch.Tensor,
    W_enc_S: torch.Tensor,
    b_enc_S: torch.Tensor,
    W_dec_S: torch.Tensor,
    b_dec: torch.Tensor,
    c_S: torch.Tensor,
    alpha: float,
    threshold_S: torch.Tensor | None = None,
) -> torch.Tensor:
    """Clamp edit h' = h + α · (c_S − z_S) · W_dec[S] (module docstring); h [..., d]."""
    z = latent_codes(h, W_enc_S, b_enc_S, b_dec, threshold_S)
    return h + (alpha * (c_S - z)) @ W_dec_S


def full_latent_steer(sae, h: torch.Tensor, v: torch.Tensor, alpha: float) -> torch.Tensor:
    """The unrestricted formula h' = h + (relu(z + α·v) − z) · W_dec with z = sae.encode(h).

    Works for every SAE architecture (TopK included); v [d_sae]; differentiable in v (z is not).
    """
    with torch.no_grad():
        z = sae.encode(h)
    return h + (torch.relu(z + alpha * v) - z) @ sae.W_dec
