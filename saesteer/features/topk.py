"""Streaming per-row top-k: for R rows (latents), keep the k largest scores seen over all batches,
each with payload tensors (token index, activation window, …), in O(R · k) memory.

Merging a batch of candidates c [R, m] into the kept scores s [R, k]:

    (s', j) = topk(concat(s, c), k, dim=1)        payload'[r, i] = concat(payload, batch)[r, j[r, i]]

Empty slots hold score −inf; `filled()` marks the real ones. The result equals topk over the
concatenation of all batches (up to the order of tied scores), which the tests check.
"""

from __future__ import annotations

import numpy as np
import torch


class StreamingTopK:
    """The k best-scoring candidates per row over a stream of batches, with their payloads."""

    def __init__(
        self,
        n_rows: int,
        k: int,
        payloads: dict[str, tuple[tuple[int, ...], torch.dtype]],
        device: torch.device | str = "cpu",
    ) -> None:
        """payloads: name → (trailing shape, dtype) of what travels with each candidate."""
        self.k = k
        self.scores = torch.full((n_rows, k), -torch.inf, device=device)
        self.payloads = {
            name: torch.zeros((n_rows, k, *shape), dtype=dtype, device=device)
            for name, (shape, dtype) in payloads.items()
        }

    def update(self, scores: torch.Tensor, payloads: dict[str, torch.Tensor]) -> None:
        """Merge candidates: scores [R, m] (−inf = not a candidate), payloads name → [R, m, …]."""
        merged = torch.cat([self.scores, scores], dim=1)
        self.scores, order = merged.topk(self.k, dim=1)
        for name, kept in self.payloads.items():
            both = torch.cat([kept, payloads[name].to(kept.dtype)], dim=1)
            index = order.view(*order.shape, *([1] * (both.ndim - 2))).expand(
                -1, -1, *both.shape[2:]
            )
            self.payloads[name] = both.gather(1, index)

    def filled(self) -> torch.Tensor:
        """[R, k] bool: slots holding a real candidate."""
        return self.scores > -torch.inf


def descending_key(groups: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering entries by group, then by float32 score descending (exactly, ties equal).

    A float32's bits b (as int32) grow with the value for b ≥ 0; negative floats count down, so
    m = b ^ 0x7FFFFFFF there. key = group · 2³² + (2³¹ − 1 − m), with 0 ≤ 2³¹ − 1 − m < 2³².
    """
    bits = scores.float().contiguous().view(torch.int32)
    monotone = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()
    return groups.long() * (1 << 32) + ((1 << 31) - 1 - monotone)


def argsort_int64(key: torch.Tensor) -> torch.Tensor:
    """argsort of int64 keys; on CPU through numpy's radix sort (torch's is ~15× slower there)."""
    if key.device.type == "cpu":
        return torch.from_numpy(np.argsort(key.numpy(), kind="stable"))
    return torch.argsort(key)


def segment_topk(
    groups: torch.Tensor, scores: torch.Tensor, n_groups: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group g, the k largest scores among entries e with groups[e] = g.

    groups, scores: [n] (one entry per nonzero of a sparse matrix, say). Returns (top scores
    [n_groups, k] descending, −inf where a group has fewer than k entries; their entry indices
    [n_groups, k] int64, 0 there). Sorting by (group, −score) ranks each entry in its group:
    rank_e = position_e − start_{group_e}; entries with rank < k are scattered out.
    """
    order = argsort_int64(descending_key(groups, scores))
    grouped = groups[order]
    counts = torch.bincount(grouped, minlength=n_groups)
    rank = (
        torch.arange(len(order), device=order.device) - (torch.cumsum(counts, 0) - counts)[grouped]
    )
    keep = (rank < k).nonzero(as_tuple=True)[0]
    where = (grouped[keep], rank[keep])
    top = torch.full((n_groups, k), -torch.inf, device=scores.device, dtype=scores.dtype)
    index = torch.zeros((n_groups, k), dtype=torch.int64, device=scores.device)
    top[where] = scores[order[keep]]
    index[where] = order[keep]
    return top, index
