"""The strength curve: success against coherence at every α of the sweep, as a PNG (matplotlib Agg).

Left panel: success rate and preference accuracy against α. Right panel: success rate against the
perplexity of the generations under the unsteered model (lower = more coherent), one point per α,
labelled with α; the baseline (α = 0) is the hollow marker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def strength_curve(report: dict[str, Any], path: str | Path) -> Path:
    """Draw the two panels (module docstring) for `report["sweep"]` into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = report["sweep"]
    alphas = [p["alpha"] for p in sweep]
    nan = float("nan")
    success = [p["success_rate"] for p in sweep]
    accuracy = [
        p["preference_accuracy"] if p["preference_accuracy"] is not None else nan for p in sweep
    ]
    ppl = [p["perplexity"] if p["perplexity"] is not None else nan for p in sweep]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    left.plot(alphas, success, "o-", label="success rate (scorer)")
    left.plot(alphas, accuracy, "s--", label="preference accuracy (val. pairs)")
    left.set_xlabel("strength α")
    left.set_ylabel("fraction")
    left.set_ylim(-0.05, 1.05)
    left.axvline(0, color="0.7", lw=0.8)
    left.legend(loc="best", fontsize=8)
    left.set_title(f"Did it work? ({report['behaviour']})")
    right.plot(ppl, success, "-", color="0.6", lw=0.8)
    for a, x, y in zip(alphas, ppl, success, strict=True):
        right.plot(x, y, "o", color="C0", mfc="white" if a == 0 else "C0")
        right.annotate(f"α={a:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    right.set_xlabel("perplexity of generations under the unsteered model")
    right.set_ylabel("success rate")
    right.set_ylim(-0.05, 1.05)
    right.set_title("Success vs coherence")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
