"""Streaming per-row top-k: for R rows (latents), keep the k largest scores seen over all batches,
each with payload tensors (token index, activation window, …), in O(R · k) memory.

Merging a batch of candidates c [R, m] into the kept scores s [R, k]:

    (s', j) = topk(concat(s, c), k, dim=1)        payload'[r, i] = concat(payload, batch)[r, j[r, i]]

Empty slots hold score −inf; `filled()` marks the real ones. The result equals topk over the
concatenation of all batches (up to the order of tied scores), which the tests check.
"""

from __future__ import annotations

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
