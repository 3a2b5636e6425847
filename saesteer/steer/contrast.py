"""Contrast activations from preference pairs, at any sites: what the direction-fitting methods read.

For pair i, row 2i is prompt + chosen (class ⁺) and row 2i + 1 is prompt + rejected (class ⁻)
(`saesteer.steer.batching`). At each site s, one forward pass of every row gives h_s [rows, T, d];
from it:

    span_means  [rows, d]       mean of h over the row's completion tokens (the response-span mean)
    tokens      [n_tokens, d]   every completion token's h (only when `keep_tokens`), with
    token_rows  [n_tokens]      the row each token came from (class = row parity: even ⁺, odd ⁻)

    diff_in_means(s) = mean(span_means⁺) − mean(span_means⁻)      (μ⁺ − μ⁻, as CAA / mean-diff)

No gradients; the model runs in chunks of `chunk_rows` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from saesteer.steer.batching import TokenizedPairs
from saesteer.steer.hooks import record
from saesteer.steer.sites import Site

CHUNK_ROWS = 16


@dataclass
class SiteContrast:
    """One site's contrast activations (module docstring)."""

    span_means: torch.Tensor  # [rows, d]
    tokens: torch.Tensor | None = None  # [n_tokens, d]
    token_rows: torch.Tensor | None = None  # [n_tokens] long

    @property
    def positive(self) -> torch.Tensor:
        return self.span_means[0::2]

    @property
    def negative(self) -> torch.Tensor:
        return self.span_means[1::2]

    def diff_in_means(self) -> torch.Tensor:
        return self.positive.mean(0) - self.negative.mean(0)

    def token_labels(self) -> torch.Tensor:
        """1 for a token of a chosen completion, 0 for a rejected one [n_tokens]."""
        if self.token_rows is None:
            raise ValueError("These contrasts were collected without keep_tokens=True.")
        return (self.token_rows % 2 == 0).long()


@torch.no_grad()
def pair_contrasts(
    model,
    tokens: TokenizedPairs,
    sites: Sequence[Site],
    keep_tokens: bool = False,
    chunk_rows: int = CHUNK_ROWS,
) -> dict[Site, SiteContrast]:
    """Contrast activations at `sites` of a TransformerLens or Hugging Face `model` (module doc)."""
    sites = list(dict.fromkeys(sites))
    means: dict[Site, list[torch.Tensor]] = {s: [] for s in sites}
    kept: dict[Site, list[torch.Tensor]] = {s: [] for s in sites}
    rows_of_tokens: list[torch.Tensor] = []
    device = _device(model)
    for lo in range(0, tokens.input_ids.shape[0], chunk_rows):
        ids = tokens.input_ids[lo : lo + chunk_rows].to(device)
        mask = tokens.target_mask[lo : lo + chunk_rows].to(device)
        with record(model, sites) as seen:
            _forward(model, ids)
        weights = mask / mask.sum(1, keepdim=True).clamp_min(1)
        chosen = mask.bool()
        if keep_tokens:
            rows = torch.arange(lo, lo + ids.shape[0], device=device)[:, None].expand_as(mask)
            rows_of_tokens.append(rows[chosen].cpu())
        for site in sites:
            h = seen[site][-1].float()  # [rows, T, d]
            means[site].append(torch.einsum("rt,rtd->rd", weights, h).cpu())
            if keep_tokens:
                kept[site].append(h[chosen].cpu())
    token_rows = torch.cat(rows_of_tokens) if keep_tokens else None
    return {
        site: SiteContrast(
            torch.cat(means[site]),
            torch.cat(kept[site]) if keep_tokens else None,
            token_rows,
        )
        for site in sites
    }


def _device(model) -> torch.device:
    if hasattr(model, "cfg") and hasattr(model, "hook_dict"):
        return torch.device(model.cfg.device)
    return next(model.parameters()).device


def _forward(model, ids: torch.Tensor) -> None:
    if hasattr(model, "hook_dict"):
        model(ids, return_type=None)
    else:
        model(input_ids=ids)
