"""Pure-torch references of every kernel: the CPU path, and the ground truth of the tests.

Notation: h [N, d_model] residual stream; an SAE with W_enc [d_model, d_sae], b_enc [d_sae],
W_dec [d_sae, d_model], b_dec [d_model]; a steering code v with support S (|S| = s), given by its
gathered columns W_enc_S = W_enc[:, S] [d_model, s], b_enc_S, W_dec_S = W_dec[S] [s, d_model], v_S [s].

Latent steer (ReLU / JumpReLU SAE; ReLU is θ = 0):
    pre_S = (h − b_dec)·W_enc_S + b_enc_S          [N, s]
    z_S   = pre_S · 1[pre_S > θ_S]
    δ     = relu(z_S + α·v_S) − z_S
    h'    = h + δ·W_dec_S                          [N, d_model]
This equals the dense YaPO edit decode(relu(z + α·v)) + (h − decode(z)) whenever v is zero off S,
because δ_i = relu(z_i) − z_i = 0 for i ∉ S (z ≥ 0 for θ ≥ 0). `yapo_dense` is that dense formula.

TopK SAE: z = topk-relu(pre) over all d_sae latents (only the k largest pre-activations of a row
survive, then relu), followed by the same edit restricted to S.

Sparse decode (TopK SAE training): x̂[n] = Σ_j values[n, j] · W_dec[indices[n, j]] + b_dec,
computed with `F.embedding_bag` (per-sample weights), whose autograd gives d values, d W_dec.

References accumulate in float32 (float64 inputs stay float64) and return h's dtype (sparse decode: the inputs' dtype).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _acc(t: torch.Tensor) -> torch.Tensor:
    """t in the accumulation dtype: float32 for 16-bit inputs, else unchanged (float64 stays)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def jump_act(pre: torch.Tensor, threshold: torch.Tensor | None) -> torch.Tensor:
    """z = pre · 1[pre > θ] (JumpReLU); θ = None means ReLU."""
    if threshold is None:
        return torch.relu(pre)
    return pre * (pre > threshold)


def latent_steer_ref(
    h: torch.Tensor,
    W_enc_S: torch.Tensor,
    b_enc_S: torch.Tensor,
    W_dec_S: torch.Tensor,
    b_dec: torch.Tensor,
    v_S: torch.Tensor,
    alpha: float,
    threshold_S: torch.Tensor | None = None,
) -> torch.Tensor:
    """h' [N, d_model] = h + (relu(z_S + α·v_S) − z_S)·W_dec_S, z_S as in the module docstring."""
    h32 = _acc(h)
    pre = torch.addmm(_acc(b_enc_S), h32 - _acc(b_dec), _acc(W_enc_S))
    theta = None if threshold_S is None else _acc(threshold_S)
    z = jump_act(pre, theta)
    delta = torch.relu(z + alpha * _acc(v_S)) - z
    return torch.addmm(h32, delta, _acc(W_dec_S)).to(h.dtype)


def topk_act(pre: torch.Tensor, k: int) -> torch.Tensor:
    """z [N, d_sae] = relu(pre) on each row's k largest pre-activations, 0 elsewhere."""
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


def topk_latent_steer_ref(
    h: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    k: int,
    S: torch.Tensor,
    v_S: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """h' = h + (relu(z_S + α·v_S) − z_S)·W_dec[S] with z = topk-relu(pre) over all d_sae."""
    h32 = _acc(h)
    pre = torch.addmm(_acc(b_enc), h32 - _acc(b_dec), _acc(W_enc))
    z = topk_act(pre, k)[:, S]
    delta = torch.relu(z + alpha * _acc(v_S)) - z
    return torch.addmm(h32, delta, _acc(W_dec[S])).to(h.dtype)


def topk_encode_ref(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [N, k], indices [N, k]): relu of each row's k largest pre-activations, descending.

    pre = (x − b_dec)·W_enc + b_enc is materialised densely; differentiable in x, W_enc, b_enc, b_dec.
    """
    pre = torch.addmm(b_enc, x - b_dec, W_enc)
    values, indices = pre.topk(k, dim=-1)
    return torch.relu(values), indices


def sparse_decode_ref(
    values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor
) -> torch.Tensor:
    """x̂ [N, d] = Σ_j values[n, j] · W_dec[indices[n, j]] + b_dec, via embedding_bag (no [N, d_sae])."""
    out = F.embedding_bag(indices, W_dec, per_sample_weights=values.to(W_dec.dtype), mode="sum")
    return out + b_dec


def yapo_dense(
    h: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    v: torch.Tensor,
    alpha: float,
    act: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The unfused YaPO edit: decode(relu(z + α·v)) + (h − decode(z)), z = act(pre), v [d_sae] dense.

    `act` maps pre [N, d_sae] to z (e.g. `torch.relu`, `lambda p: topk_act(p, k)`).
    Full encode and two decodes: the baseline the fused kernel is measured against.
    """
    z = act((h - b_dec) @ W_enc + b_enc)
    steered = torch.relu(z + alpha * v) @ W_dec + b_dec
    return steered + (h - (z @ W_dec + b_dec))
