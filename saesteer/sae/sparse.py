"""Sparse decode for TopK-family training: only the k active rows of W_dec are touched.

With z holding k nonzeros per row (values `vals` [B, k] at columns `idx` [B, k]):

    x̂_b − b_dec = Σ_i vals[b, i] · W_dec[idx[b, i]]                  [B, d_in]

computed with `F.embedding_bag(mode="sum", per_sample_weights=vals)`; its backward gives
∂L/∂vals[b, i] = ⟨∂L/∂x̂_b, W_dec[idx[b, i]]⟩ and scatters vals[b, i]·∂L/∂x̂_b into row idx[b, i]
of ∂L/∂W_dec. Cost O(B·k·d_in) instead of the dense O(B·d_sae·d_in).

BatchTopK rows hold a varying number of latents: the flat (row, column, value) triples, sorted by
row, go through the same `embedding_bag` with `offsets` marking where each row starts.

The seam for faster kernels is `topk_autoencode`: one call for "TopK encode + sparse decode".
A kernel backend (saesteer/kernels) can replace it through `set_topk_autoencode(fn)`, keeping its
contract (same outputs, same autograd semantics); `dense_topk_autoencode` is the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


class TopKOutput(NamedTuple):
    """Result of a TopK encode + decode on a batch: shapes in the field comments."""

    recon: torch.Tensor  # x̂ − b_dec: [B, d_in]
    vals: torch.Tensor  # relu of the k largest pre-activations per row: [B, k]
    idx: torch.Tensor  # their latent indices: [B, k] (int64)
    pre: torch.Tensor  # pre-activations: [B, d_sae]


def sparse_decode(idx: torch.Tensor, vals: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """Σ_i vals[b, i]·W_dec[idx[b, i]]: idx, vals [B, k], W_dec [d_sae, d_in] → [B, d_in]."""
    return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")


def ragged_decode(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int, W_dec: torch.Tensor
) -> torch.Tensor:
    """Σ over triples with rows == b of vals·W_dec[cols] → [n_rows, d_in] (rows need not be sorted)."""
    order = torch.argsort(rows, stable=True)
    counts = torch.bincount(rows, minlength=n_rows)
    offsets = torch.cumsum(counts, 0) - counts
    return F.embedding_bag(
        cols[order],
        W_dec,
        offsets,
        per_sample_weights=vals[order],
        mode="sum",
        include_last_offset=False,
    )


def sparse_topk_autoencode(
    x_centered: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, k: int
) -> TopKOutput:
    """pre = x_c·W_enc + b_enc; keep each row's top k (relu); decode the k rows of W_dec.

    x_centered: [B, d_in] (x − b_dec), W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in].
    """
    pre = torch.addmm(b_enc, x_centered, W_enc)
    top_vals, idx = pre.topk(k, dim=-1, sorted=False)
    vals = torch.relu(top_vals)
    return TopKOutput(sparse_decode(idx, vals, W_dec), vals, idx, pre)


def dense_topk_autoencode(
    x_centered: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, k: int
) -> TopKOutput:
    """Reference: the same as `sparse_topk_autoencode` with a dense z [B, d_sae] and z·W_dec."""
    pre = x_centered @ W_enc + b_enc
    top_vals, idx = pre.topk(k, dim=-1, sorted=False)
    vals = torch.relu(top_vals)
    z = torch.zeros_like(pre).scatter(-1, idx, vals)
    return TopKOutput(z @ W_dec, vals, idx, pre)


TopKAutoencode = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], TopKOutput]
_topk_autoencode: TopKAutoencode = sparse_topk_autoencode


def set_topk_autoencode(fn: TopKAutoencode | None) -> None:
    """Install a faster TopK encode + sparse decode (None restores the torch sparse path)."""
    global _topk_autoencode
    _topk_autoencode = fn or sparse_topk_autoencode


def topk_autoencode(
    x_centered: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, k: int
) -> TopKOutput:
    """The trainer's TopK encode + decode: whichever implementation is installed (see module doc)."""
    return _topk_autoencode(x_centered, W_enc, b_enc, W_dec, k)
