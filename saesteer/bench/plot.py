"""The benchmark's PNGs, per behaviour (matplotlib Agg).

pareto_BEHAVIOUR.png   success rate against perplexity (log x): every cell of every method and
                       seed as a small point, each seed's curve as a thin line from the unsteered
                       point, the best cell within the budget as a large marker with its 95 %
                       bootstrap interval; the budget as a dashed vertical line.
strength_BEHAVIOUR.png success rate (left) and perplexity (right, log y) against α, per seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto(name: str, entry: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    base = entry["unsteered"]
    ax.plot(base["ppl"], base["success_rate"], "ks", mfc="white", label="unsteered")
    for i, (method, data) in enumerate(entry["methods"].items()):
        colour = f"C{i % 10}"
        for rows in data["cells"].values():
            xs = [base["ppl"], *(r["ppl"] for r in rows)]
            ys = [base["success_rate"], *(r["success_rate"] for r in rows)]
            ax.plot(xs, ys, "-", color=colour, lw=0.8, alpha=0.6)
            ax.plot(xs[1:], ys[1:], ".", color=colour, alpha=0.8)
        best = data["best"]
        if best is not None:
            lo, hi = best["ci"]
            ax.errorbar(
                best["ppl"],
                best["success_rate"],
                yerr=[[best["success_rate"] - lo], [hi - best["success_rate"]]],
                fmt="o",
                ms=8,
                color=colour,
                capsize=3,
                label=f"{method} (best within budget)",
            )
        else:
            ax.plot([], [], "-", color=colour, label=f"{method} (none within budget)")
    ax.axvline(entry["limit_ppl"], color="0.5", ls="--", lw=1)
    ax.set(
        xscale="log",
        xlabel="perplexity of generations under the unsteered model",
        ylabel="success rate",
        ylim=(-0.05, 1.05),
        title=f"{name}: success against coherence",
    )
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def strength(name: str, entry: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for i, (method, data) in enumerate(entry["methods"].items()):
        colour = f"C{i % 10}"
        for j, rows in enumerate(data["cells"].values()):
            label = method if j == 0 else None
            alphas = [r["alpha"] for r in rows]
            left.plot(
                alphas, [r["success_rate"] for r in rows], "o-", color=colour, ms=3, label=label
            )
            right.plot(alphas, [r["ppl"] for r in rows], "o-", color=colour, ms=3, label=label)
    right.axhline(entry["limit_ppl"], color="0.5", ls="--", lw=1)
    left.set(
        xlabel="strength α", ylabel="success rate", ylim=(-0.05, 1.05), title=f"{name}: success"
    )
    right.set(xlabel="strength α", ylabel="perplexity", yscale="log", title="coherence cost")
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
