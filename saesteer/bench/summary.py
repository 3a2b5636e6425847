"""From finished cells to the leaderboard: each method read at the coherence budget.

Per (behaviour, method, seed), with the unsteered cell first and the cells in increasing α:

    limit          = budget × ppl(α = 0)
    best cell      the cell with the highest success rate among those with ppl ≤ limit (ties: the
                   smaller α); none when every steered cell is over the budget
    success@budget `metrics.success_at_budget` along the curve (≥ when never over the budget)
    combined       H = 2 s c / (s + c) per cell, c = min(1, ppl_0 / ppl); best H over the cells

Per method: the mean over seeds of the best cells' numbers, a 95 % bootstrap interval of their
success over (seed, prompt), and whether the method is distinguishable from the behaviour's leader
(a paired bootstrap over the shared prompts: the interval of the difference excludes 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from saesteer.bench import metrics


def rate(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def cell_row(cell: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The flat per-cell numbers of results.json (per-prompt lists stay in cells/)."""
    success = rate(cell["success"])
    c = metrics.coherence(cell["ppl"], base["ppl"])
    side = cell.get("side_effects", {})
    capability = cell.get("capability") or {}
    return {
        "alpha": cell["alpha"],
        "success_rate": success,
        "score_mean": rate(cell["score"]),
        "embed_mean": rate(cell["embed"]),
        "embed_rate": rate([float(e > 0) for e in cell["embed"]]),
        "ppl": cell["ppl"],
        "coherence": c,
        "combined": metrics.harmonic_mean(success, c),
        "kl": cell["kl"],
        "distinct_2": cell["distinct_2"],
        "repetition": cell["repetition"],
        "compression": cell["compression"],
        "side": side.get("side"),
        "along": side.get("along"),
        "mc_accuracy": capability.get("mc_accuracy"),
        "brown_ppl": capability.get("brown_ppl"),
    }


def best_cell(cells: Sequence[dict[str, Any]], limit: float) -> dict[str, Any] | None:
    """The most successful cell within the perplexity limit (ties: smaller α), or None."""
    within = [c for c in cells if c["ppl"] <= limit]
    if not within:
        return None
    return max(within, key=lambda c: (rate(c["success"]), -c["alpha"]))


def summarise_method(
    seeds: dict[int, list[dict[str, Any]]], base: dict[str, Any], budget: float, boot: int
) -> dict[str, Any]:
    """One leaderboard entry from {seed: cells sorted by α} (module docstring)."""
    limit = budget * base["ppl"]
    base_point = (base["ppl"], rate(base["success"]))
    best, at_budget, combined = [], [], []
    for cells in seeds.values():
        best.append(best_cell(cells, limit))
        curve = [base_point, *((c["ppl"], rate(c["success"])) for c in cells)]
        at_budget.append(metrics.success_at_budget(curve, limit))
        combined.append(max(cell_row(c, base)["combined"] for c in cells))
    found = [b for b in best if b is not None]
    entry: dict[str, Any] = {
        "seeds": len(seeds),
        "success_at_budget": rate([v for v, _ in at_budget]),
        "success_at_budget_reached": all(r for _, r in at_budget),
        "best_combined": rate(combined),
        "best_alpha": [b["alpha"] if b else None for b in best],
        "within_budget": len(found),
        "best": None,
        "success_lists": [b["success"] for b in found],
    }
    if found:
        rows = [cell_row(b, base) for b in found]
        mean = {k: _mean_or_none([r[k] for r in rows]) for k in rows[0] if k != "alpha"}
        lo, hi = metrics.bootstrap_interval([b["success"] for b in found], boot)
        entry["best"] = {**mean, "ci": [lo, hi]}
    return entry


def _mean_or_none(values: list[Any]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def mark_distinguishable(entries: dict[str, dict[str, Any]], boot: int) -> str | None:
    """Set entry["vs_leader"] = (lo, hi) of success − leader's success at the best cells, and
    entry["distinguishable"]; returns the leader (highest mean best-cell success) or None."""
    ranked = [m for m, e in entries.items() if e["best"] is not None]
    if not ranked:
        return None
    leader = max(ranked, key=lambda m: entries[m]["best"]["success_rate"])
    for method in ranked:
        entry = entries[method]
        if method == leader:
            entry["vs_leader"], entry["distinguishable"] = None, None
            continue
        lo, hi = metrics.paired_difference_interval(
            entry["success_lists"], entries[leader]["success_lists"], boot
        )
        entry["vs_leader"] = [lo, hi]
        entry["distinguishable"] = not lo <= 0 <= hi
    return leader
