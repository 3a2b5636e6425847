"""Logit lens of SAE latents: which output tokens each decoder direction promotes or suppresses.

For latent i with decoder row d_i = W_dec[i] [d_model], read out as if it were the final residual:

    RMS / RMSPre norms   u_i = d_i ⊙ w                         (w: ln_final scale; 1 for *Pre)
    LN / LNPre norms     u_i = (d_i − mean(d_i)) ⊙ w           (LayerNorm centres its input)
    no final norm        u_i = d_i
    lens_i = u_i · W_U        [d_vocab]                         (biases b_ln, b_U are the same for
                                                                 every latent and are left out)

The norm's 1/rms(x) factor is a positive scalar per token, so it changes no ranking and is dropped.
Promoted tokens are the n largest entries of lens_i, suppressed the n smallest.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

CHUNK_LATENTS = 256


class LogitLens(NamedTuple):
    """Per latent: promoted / suppressed token ids [d_sae, n] int64 and their logit effects."""

    up_ids: torch.Tensor
    up_values: torch.Tensor
    down_ids: torch.Tensor
    down_values: torch.Tensor


def unembed_input(model: Any, directions: torch.Tensor) -> torch.Tensor:
    """u = directions [n, d_model] through the final norm's centring and scale (module docstring)."""
    kind = model.cfg.normalization_type
    u = directions.float()
    if kind in ("LN", "LNPre"):
        u = u - u.mean(dim=-1, keepdim=True)
    if kind in ("LN", "RMS"):
        u = u * model.ln_final.w.detach().float()
    elif kind not in ("LNPre", "RMSPre", None):
        raise ValueError(f"Logit lens does not know the final norm type {kind!r}.")
    return u


@torch.no_grad()
def logit_lens(model: Any, W_dec: torch.Tensor, n: int) -> LogitLens:
    """lens = unembed_input(W_dec) · W_U for W_dec [d_sae, d_model]; the n top and bottom tokens."""
    W_U = model.W_U.detach().float()
    if W_dec.shape[1] != W_U.shape[0]:
        raise ValueError(
            f"The SAE's d_in ({W_dec.shape[1]}) is not the model's d_model ({W_U.shape[0]}): "
            "the logit lens needs an SAE on the residual stream of this model (pass --model)."
        )
    n = min(n, W_U.shape[1])
    parts = []
    for start in range(0, W_dec.shape[0], CHUNK_LATENTS):
        lens = unembed_input(model, W_dec[start : start + CHUNK_LATENTS].to(W_U.device)) @ W_U
        up = lens.topk(n, dim=1)
        down = lens.topk(n, dim=1, largest=False)
        parts.append((up.indices, up.values, down.indices, down.values))
    return LogitLens(*(torch.cat([p[j] for p in parts]).cpu() for j in range(4)))
