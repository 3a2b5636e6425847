"""Logits and one layer's hidden states of whole token sequences, with either model kind.

A Hugging Face model runs rows left-padded in chunks, each row's positions counted from its first
real token (so padding changes nothing); a TransformerLens model runs each row alone (its own
left-padding positions are not trusted, see DESIGN.md). Run it inside `steer(...)` to score a
steered model: every position of every row is edited.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from saesteer.steer.batching import left_padded
from saesteer.steer.hooks import is_hooked_transformer

CHUNK_ROWS = 16


@torch.inference_mode()
def sequence_outputs(
    model: Any, rows: Sequence[torch.Tensor], layer: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(logits [T, vocab], hidden [T, d] after block `layer` − 1, or None) of each 1-D id row.

    `layer` counts blocks: 0 is the embeddings, n is the output of block n − 1 (resid_post).
    """
    if is_hooked_transformer(model):
        out = []
        for row in rows:
            ids = row[None].to(model.cfg.device)
            if layer is None:
                out.append((model(ids)[0].float().cpu(), None))
                continue
            name = "hook_embed" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"
            logits, cache = model.run_with_cache(ids, names_filter=name)
            out.append((logits[0].float().cpu(), cache[name][0].float().cpu()))
        return out
    out = []
    for lo in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[lo : lo + CHUNK_ROWS]
        ids, mask, positions = left_padded(chunk)
        width = ids.shape[1]
        device = model.device
        result = model(
            ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            output_hidden_states=layer is not None,
        )
        for i, r in enumerate(chunk):
            keep = slice(width - r.numel(), width)
            hidden = (
                result.hidden_states[layer][i, keep].float().cpu() if layer is not None else None
            )
            out.append((result.logits[i, keep].float().cpu(), hidden))
    return out


def continuation_logprobs(logits: torch.Tensor, ids: torch.Tensor, start: int) -> torch.Tensor:
    """log p(ids[t] | ids[<t]) for t ≥ start [len(ids) − start], from the row's logits [T, vocab]."""
    logp = torch.log_softmax(logits[start - 1 : -1].double(), dim=-1)
    return logp.gather(-1, ids[start:, None].to(logp.device))[:, 0]
