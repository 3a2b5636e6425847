"""Model runs behind the audit's numbers (formulas in `saesteer.audit.metrics`).

Steering at hook H (`blocks.l.hook_resid_post` or `..._pre`) edits the residual h_H only, so for
every text the unsteered residual at H is computed once and each strength runs only the blocks above:

    h   = blocks[:s](embed(x))               s = l + 1 for resid_post, l for resid_pre
    h'  = code.apply(h, α)                   (every position, as `steer(..., positions="all")`)
    h_L = blocks[s:L+1](h')                  the later layer's resid_post
    logits = unembed(blocks[s:](h'))

This equals running the whole model under `steer(model, code, α)`; the tests check it. Texts run one
at a time (no padding), except preference pairs, which are right-padded (harmless in a causal model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from saesteer.audit.metrics import token_logprobs
from saesteer.steer.batching import TokenizedPairs, completion_logprobs
from saesteer.steer.codes import SteeringCode

PAIR_CHUNK = 16


@dataclass
class Residuals:
    """Token ids [T] of texts and their unsteered residual at the steered hook [T, d_model]."""

    ids: list[torch.Tensor]
    resid: list[torch.Tensor]


@torch.no_grad()
def residuals(model: Any, ids: Sequence[torch.Tensor], start: int) -> Residuals:
    """h = blocks[:start](embed(ids)) for each 1-D id tensor."""
    device = model.cfg.device
    resid = [model(x[None].to(device), stop_at_layer=start)[0] for x in ids]
    return Residuals(list(ids), resid)


def right_padded(ids: Sequence[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N, T], mask [N, T]) of 1-D id tensors, right-padded with `pad` (mask 1 = real token)."""
    width = max(x.numel() for x in ids)
    batch = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros(len(ids), width)
    for row, x in enumerate(ids):
        batch[row, : x.numel()] = x
        mask[row, : x.numel()] = 1.0
    return batch, mask


@torch.no_grad()
def run_above(model: Any, h: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
    """blocks[start:stop](h) for h [T, d] or [N, T, d] (stop None: through the unembedding → logits)."""
    if h.ndim == 2:
        return model(h[None], start_at_layer=start, stop_at_layer=stop)[0]
    return model(h, start_at_layer=start, stop_at_layer=stop)


def steered(code: SteeringCode | None, h: torch.Tensor, alpha: float) -> torch.Tensor:
    """h' = code.apply(h, α) in h's dtype/device (no code or α = 0: h itself)."""
    if code is None or alpha == 0:
        return h
    return code.to(h.device, h.dtype).apply(h, alpha)


@torch.no_grad()
def generation_logprobs(
    model: Any, prompts: Sequence[torch.Tensor], generations: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """log p_0(g_t | prompt, g_<t) [len(g)] of each generation under the unsteered model."""
    out = []
    for prompt, gen in zip(prompts, generations, strict=True):
        if gen.numel() == 0:
            out.append(torch.zeros(0, dtype=torch.float64))
            continue
        full = torch.cat([prompt, gen]).to(model.cfg.device)
        logits = model(full[None])[0]
        out.append(token_logprobs(logits, full)[prompt.numel() - 1 :].cpu())
    return out


@dataclass
class PairResiduals:
    """Tokenized validation pairs, their residual at the hook [rows, T, d] and log π_0 [rows]."""

    tokens: TokenizedPairs
    resid: torch.Tensor
    logp_ref: torch.Tensor


@torch.no_grad()
def pair_residuals(model: Any, tokens: TokenizedPairs, start: int) -> PairResiduals:
    """Cache h at the hook for every pair row, and the unsteered completion log-probs."""
    device = model.cfg.device
    resid, logp = [], []
    for lo in range(0, tokens.input_ids.shape[0], PAIR_CHUNK):
        ids = tokens.input_ids[lo : lo + PAIR_CHUNK].to(device)
        h = model(ids, stop_at_layer=start)
        logits = model(h, start_at_layer=start)
        resid.append(h)
        logp.append(
            completion_logprobs(logits, ids, tokens.target_mask[lo : lo + PAIR_CHUNK].to(device))
        )
    return PairResiduals(tokens, torch.cat(resid), torch.cat(logp).cpu())


@torch.no_grad()
def pair_logprobs(
    model: Any, pairs: PairResiduals, start: int, code: SteeringCode | None, alpha: float
) -> torch.Tensor:
    """log π_α(y | x) per row [rows] with h' = code.apply(h, α) at the hook."""
    out = []
    for lo in range(0, pairs.resid.shape[0], PAIR_CHUNK):
        h = steered(code, pairs.resid[lo : lo + PAIR_CHUNK], alpha)
        ids = pairs.tokens.input_ids[lo : lo + PAIR_CHUNK].to(h.device)
        mask = pairs.tokens.target_mask[lo : lo + PAIR_CHUNK].to(h.device)
        out.append(completion_logprobs(model(h, start_at_layer=start), ids, mask))
    return torch.cat(out).cpu()
