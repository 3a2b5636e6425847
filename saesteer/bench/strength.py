"""`--alphas auto`: find each method's useful strengths from the coherence budget, not a grid.

Every method is trained at α = 1, but a useful strength differs by method and behaviour (a dense
vector may break the text at α = 2 where a sparse code has barely moved it). With the perplexity
limit L = budget × ppl(α = 0), and at most `max_probes` evaluated strengths:

    1. bracket: α = 1; while ppl(α) ≤ L double α (≤ MAX_ALPHA), else halve it (≥ MIN_ALPHA),
       until one strength is within the budget and the next is over it;
    2. bisect in log-space: α_mid = √(α_in · α_over), keep the half that still brackets L.

Every probe is a full benchmark cell, so the probes *are* the strength curve: dense near the
budget crossing, where the comparison at equal coherence is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable

MAX_ALPHA = 64.0
MIN_ALPHA = 1 / 64


def auto_alphas(ppl_at: Callable[[float], float], limit: float, max_probes: int) -> list[float]:
    """The strengths probed (sorted) by the bracket-then-bisect search (module docstring)."""
    seen: dict[float, float] = {}

    def probe(alpha: float) -> bool:
        if alpha not in seen:
            seen[alpha] = ppl_at(alpha)
        return seen[alpha] <= limit

    alpha = 1.0
    within = probe(alpha)
    inside, over = (alpha, None) if within else (None, alpha)
    while len(seen) < max_probes and (inside is None or over is None):
        alpha = alpha * 2 if within else alpha / 2
        if not MIN_ALPHA <= alpha <= MAX_ALPHA:
            break
        within = probe(alpha)
        if within:
            inside = alpha if inside is None else max(inside, alpha)
        else:
            over = alpha if over is None else min(over, alpha)
    while len(seen) < max_probes and inside is not None and over is not None:
        middle = math.sqrt(inside * over)
        if probe(middle):
            inside = middle
        else:
            over = middle
    return sorted(seen)
