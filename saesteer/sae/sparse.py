"""Sparse decode for TopK-family training: only the k active rows of W_dec are touched.

With z holding k nonzeros per row (values `vals` [B, k] at columns `idx` [B, k]):

    x̂_b − b_dec = Σ_i vals[b, i] · W_dec[idx[b, i]]                  [B, d_in]

computed with `F.embedding_bag(mode="sum", per_sample_weights=vals)`; the backward gives
∂L/∂vals[b, i] = ⟨∂L/∂x̂_b, W_dec[idx[b, i]]⟩ and scatters vals[b, i]·∂L/∂x̂_b into row idx[b, i]
of ∂L/∂W_dec (`scatter_rows`, a CSR product). Cost O(B·k·d_in) instead of the dense O(B·d_sae·d_in).

BatchTopK rows hold a varying number of latents: the flat (row, column, value) triples, sorted by
row, go through the same `embedding_bag` with `offsets` marking where each row starts.

`topk_autoencode` is the trainer's one call for "TopK encode + sparse decode": on CUDA it runs the
Triton kernels of `saesteer.kernels` (same outputs and autograd semantics), elsewhere the torch
sparse path below; `dense_topk_autoencode` is the reference both are tested against.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

from saesteer.sae.model import topk_relu


class TopKOutput(NamedTuple):
    """Result of a TopK encode + decode on a batch: shapes in the field comments."""

    recon: torch.Tensor  # x̂ − b_dec: [B, d_in]
    vals: torch.Tensor  # relu of the k largest pre-activations per row: [B, k]
    idx: torch.Tensor  # their latent indices: [B, k] (int64)
    pre: torch.Tensor | None  # pre-activations [B, d_sae] (no gradient; None from the kernels)


class RowLayout(NamedTuple):
    """idx [B, k] regrouped by latent: a CSR pattern of the [d_sae, B] matrix with entries at idx."""

    order: torch.Tensor  # entry positions sorted by latent (stable): [E] (E = B·k for TopK)
    crow: torch.Tensor  # row pointers: [d_sae + 1]
    cols: torch.Tensor  # the token b of each sorted entry: [E]


def latent_layout(latents: torch.Tensor, tokens: torch.Tensor, n_latents: int) -> RowLayout:
    """CSR pattern of entries (latent, token), latents/tokens [E], regrouped by latent.

    One stable int32 sort (torch's int64 sorts are 2-10× slower on a busy multi-threaded CPU).
    """
    order = torch.sort(latents.int(), stable=True).indices
    crow = torch.zeros(n_latents + 1, dtype=torch.int64, device=latents.device)
    crow[1:] = torch.cumsum(torch.bincount(latents, minlength=n_latents), 0)
    return RowLayout(order, crow, tokens[order])


def row_layout(idx: torch.Tensor, n_rows: int) -> RowLayout:
    """The CSR pattern of idx [B, k] (entry b·k + i belongs to token b)."""
    tokens = torch.arange(idx.shape[0], device=idx.device).repeat_interleave(idx.shape[1])
    return latent_layout(idx.reshape(-1), tokens, n_rows)


def scatter_rows(layout: RowLayout, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """out[j] = Σ_{b,i: idx[b,i] = j} weights[b,i]·x[b]: weights [B, k], x [B, d] → [d_sae, d].

    A CSR matrix [d_sae, B] times x. (embedding_bag's own weight gradient sorts int64 indices with
    a parallel sort that is up to ~20× slower on a busy multi-threaded CPU.)
    """
    shape = (layout.crow.shape[0] - 1, x.shape[0])
    values = weights.reshape(-1)[layout.order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(layout.crow, layout.cols, values, shape) @ x


def _bag_weight_grad(
    idx: torch.Tensor,
    table: torch.Tensor,
    grad_out: torch.Tensor,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """∂/∂w[e] of Σ_e w[e]·table[idx[e]] (bags by row or `offsets`) against grad_out [B, d]:
    ⟨grad_out[bag of e], table[idx[e]]⟩."""
    with torch.enable_grad():
        w = torch.ones(idx.shape, dtype=table.dtype, device=table.device, requires_grad=True)
        bag = F.embedding_bag(idx, table.detach(), offsets, per_sample_weights=w, mode="sum")
        return torch.autograd.grad(bag, w, grad_outputs=grad_out)[0]


class _SparseDecode(torch.autograd.Function):
    """Σ_i vals[b,i]·W_dec[idx[b,i]], with ∂/∂vals = ⟨g_b, W_dec[idx]⟩ and ∂/∂W_dec = scatter_rows."""

    @staticmethod
    def forward(ctx, idx, vals, W_dec, *layout):
        ctx.save_for_backward(idx, vals, W_dec, *layout)
        return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx, grad_out):
        idx, vals, W_dec, *layout = ctx.saved_tensors
        grad_vals = _bag_weight_grad(idx, W_dec, grad_out) if ctx.needs_input_grad[1] else None
        grad_W = (
            scatter_rows(RowLayout(*layout), vals, grad_out) if ctx.needs_input_grad[2] else None
        )
        return None, grad_vals, grad_W, None, None, None


def sparse_decode(
    idx: torch.Tensor, vals: torch.Tensor, W_dec: torch.Tensor, layout: RowLayout | None = None
) -> torch.Tensor:
    """Σ_i vals[b, i]·W_dec[idx[b, i]]: idx, vals [B, k], W_dec [d_sae, d_in] → [B, d_in].

    layout: `row_layout(idx, d_sae)` when the caller already has it (saves a sort).
    """
    layout = layout or row_layout(idx, W_dec.shape[0])
    return _SparseDecode.apply(idx, vals, W_dec, *layout)


class _RaggedDecode(torch.autograd.Function):
    """Per row b: Σ over its entries e of vals[e]·W_dec[cols[e]] (entries sorted by row, `offsets`)."""

    @staticmethod
    def forward(ctx, cols, offsets, vals, W_dec, *layout):
        ctx.save_for_backward(cols, offsets, vals, W_dec, *layout)
        return F.embedding_bag(cols, W_dec, offsets, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx, grad_out):
        cols, offsets, vals, W_dec, *layout = ctx.saved_tensors
        grad_vals = _bag_weight_grad(cols, W_dec, grad_out, offsets)
        grad_W = scatter_rows(RowLayout(*layout), vals, grad_out)
        return None, None, grad_vals, grad_W, None, None, None


def ragged_decode(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int, W_dec: torch.Tensor
) -> torch.Tensor:
    """Σ over triples with rows == b of vals·W_dec[cols] → [n_rows, d_in] (any order of triples)."""
    order = torch.sort(rows.int(), stable=True).indices
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = torch.bincount(rows, minlength=n_rows)
    offsets = torch.cumsum(counts, 0) - counts
    layout = latent_layout(cols, rows, W_dec.shape[0])
    return _RaggedDecode.apply(cols, offsets, vals, W_dec, *layout)


class _SparseTopKEncode(torch.autograd.Function):
    """(vals, idx, pre) = TopK(relu) of pre = x_c·W_enc + b_enc, with a sparse backward.

    With g = ∂L/∂vals · 1[vals > 0] ([B, k], nonzero only at the chosen latents):
        ∂L/∂b_enc[j]    = Σ_{b,i: idx[b,i]=j} g[b,i]
        ∂L/∂x_c[b]      = Σ_i g[b,i] · W_enc[:, idx[b,i]]             (embedding_bag on W_encᵀ)
        ∂L/∂W_enc[:, j] = Σ_{b,i: idx[b,i]=j} g[b,i] · x_c[b]          (`scatter_rows`)
    O(B·k·d_in) instead of the two dense [B, d_sae] × [d_sae, d_in] products. `pre` is returned
    without gradient (for statistics only), then the `RowLayout` of idx (shared with the decode).
    """

    @staticmethod
    def forward(ctx, x_c, W_enc, b_enc, k):
        pre = torch.addmm(b_enc, x_c, W_enc)
        vals, idx = topk_relu(pre, k)
        layout = row_layout(idx, W_enc.shape[1])
        ctx.save_for_backward(x_c, W_enc, vals, idx, *layout)
        ctx.mark_non_differentiable(idx, pre, *layout)
        return vals, idx, pre, *layout

    @staticmethod
    def backward(ctx, grad_vals, *_non_differentiable):
        x_c, W_enc, vals, idx, *layout = ctx.saved_tensors
        g = grad_vals * (vals > 0)
        grad_b = torch.zeros(W_enc.shape[1], dtype=g.dtype, device=g.device)
        grad_b.index_add_(0, idx.reshape(-1), g.reshape(-1))
        grad_x = F.embedding_bag(idx, W_enc.t().contiguous(), per_sample_weights=g, mode="sum")
        grad_rows = scatter_rows(RowLayout(*layout), g, x_c)
        return grad_x, grad_rows.t(), grad_b, None


def sparse_topk_autoencode(
    x_centered: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, k: int
) -> TopKOutput:
    """pre = x_c·W_enc + b_enc; keep each row's top k (relu); decode the k rows of W_dec.

    x_centered: [B, d_in] (x − b_dec), W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in].
    Only the encoder's forward product is dense; every backward product is sparse.
    """
    vals, idx, pre, *layout = _SparseTopKEncode.apply(x_centered, W_enc, b_enc, k)
    return TopKOutput(sparse_decode(idx, vals, W_dec, RowLayout(*layout)), vals, idx, pre)


def dense_topk_autoencode(
    x_centered: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, k: int
) -> TopKOutput:
    """Reference: the same as `sparse_topk_autoencode` with a dense z [B, d_sae] and z·W_dec."""
    pre = x_centered @ W_enc + b_enc
    vals, idx = topk_relu(pre, k)
    z = torch.zeros_like(pre).scatter(-1, idx, vals)
    return TopKOutput(z @ W_dec, vals, idx, pre)


def triton_topk_autoencode(
    x_centered: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, k: int
) -> TopKOutput:
    """The same through the Triton kernels (`saesteer.kernels.topk_encode` + `sparse_decode`):
    the per-row top-k is found without writing pre [B, d_sae], so `pre` is None here."""
    from saesteer.kernels import sparse_decode as kernel_decode
    from saesteer.kernels import topk_encode

    zero = torch.zeros(W_dec.shape[1], dtype=W_dec.dtype, device=W_dec.device)
    vals, idx = topk_encode(x_centered, W_enc, b_enc, zero, k, backend="triton")
    return TopKOutput(kernel_decode(vals, idx, W_dec, zero, backend="triton"), vals, idx, None)


def topk_autoencode(
    x_centered: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, k: int
) -> TopKOutput:
    """The trainer's TopK encode + decode: the Triton kernels where they run (CUDA tensors, triton
    installed, SAESTEER_DISABLE_TRITON unset), else the torch sparse path."""
    from saesteer.kernels import triton_available

    if triton_available(x_centered, W_enc, b_enc, W_dec):
        return triton_topk_autoencode(x_centered, W_enc, b_enc, W_dec, k)
    return sparse_topk_autoencode(x_centered, W_enc, b_enc, W_dec, k)
