"""Latents per token of user prompts: run the model to the SAE's hook, encode, keep the strongest.

For prompt tokens p [T], x = h_hook(p) [T, d_in], z = sae.encode(x) [T, d_sae]; each token keeps
(ids, values) = its n largest positive z (−1 / 0 padding), as in the sparse latent cache.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from saesteer.features.sparse_cache import token_topk
from saesteer.hook_names import hook_layer


class PromptLatents(NamedTuple):
    """One prompt: its text, token ids [T], and per token the n strongest latents [T, n]."""

    text: str
    token_ids: list[int]
    latent_ids: list[list[int]]
    values: list[list[float]]


@torch.no_grad()
def prompt_latents(
    model: Any, sae: Any, hook: str, prompts: list[str], n: int = 8
) -> list[PromptLatents]:
    """Encode each prompt's activations at `hook` (the forward stops after that block)."""
    layer = hook_layer(hook)
    device = sae.W_enc.device
    out = []
    for text in prompts:
        tokens = model.to_tokens(text)  # [1, T], BOS as the model's default_prepend_bos says
        _, cache = model.run_with_cache(
            tokens, names_filter=hook, stop_at_layer=None if layer is None else layer + 1
        )
        if hook not in cache:
            raise ValueError(f"The model has no hook {hook!r}; pass the SAE's hook with --hook.")
        z = sae.encode(cache[hook][0].to(device, sae.W_enc.dtype))  # [T, d_sae]
        ids, values = token_topk(z, n)
        out.append(PromptLatents(text, tokens[0].tolist(), ids.tolist(), values.cpu().tolist()))
    return out
