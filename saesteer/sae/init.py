"""Initialisation from data: the input scale and b_dec.

    scale s = sqrt(d_in) / mean_b ‖x_b‖          (inputs are trained as s·x, mean norm sqrt(d_in))
    b_dec   = geometric median of s·x            argmin_m Σ_b ‖s·x_b − m‖, by Weiszfeld iterations
              m ← Σ_b w_b·x_b / Σ_b w_b,  w_b = 1 / max(‖x_b − m‖, ε)
            | mean of s·x | 0
The encoder starts as the decoder's transpose with unit-norm decoder rows (see `SAE.__init__`).
"""

from __future__ import annotations

import math

import torch


def input_scale(acts: torch.Tensor) -> float:
    """s with mean ‖s·x‖ = sqrt(d_in); acts [n, d_in]."""
    mean_norm = float(acts.norm(dim=1).mean())
    if not mean_norm > 0 or not math.isfinite(mean_norm):
        raise ValueError(
            f"Activations have mean norm {mean_norm}; cannot normalise (all zero or NaN?)."
        )
    return math.sqrt(acts.shape[1]) / mean_norm


def geometric_median(
    points: torch.Tensor, iters: int = 100, eps: float = 1e-6, tol: float = 1e-7
) -> torch.Tensor:
    """Weiszfeld's algorithm on points [n, d] → [d] (float64 inside)."""
    x = points.double()
    median = x.mean(dim=0)
    for _ in range(iters):
        weights = 1.0 / (x - median).norm(dim=1).clamp(min=eps)
        new = (weights[:, None] * x).sum(dim=0) / weights.sum()
        shift = float((new - median).norm())
        median = new
        if shift <= tol * (1.0 + float(median.norm())):
            break
    return median.to(points.dtype)


@torch.no_grad()
def init_b_dec(sae_b_dec: torch.Tensor, acts: torch.Tensor, method: str) -> None:
    """Set b_dec [d_in] in place from the (already scaled) sample acts [n, d_in]."""
    if method == "geometric_median":
        sae_b_dec.copy_(geometric_median(acts))
    elif method == "mean":
        sae_b_dec.copy_(acts.mean(dim=0))
    elif method == "zeros":
        sae_b_dec.zero_()
    else:
        raise ValueError(f"Unknown b_dec init {method!r}; use geometric_median, mean or zeros.")
