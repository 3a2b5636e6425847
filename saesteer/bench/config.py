"""`BenchSteerConfig`: one dataclass for `saesteer bench-steer`, config files and `run_bench`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from saesteer.config import check_at_least, option

CAPABILITY = ("best", "all", "none")


@dataclass
class BenchSteerConfig:
    """Which behaviours × methods × seeds × strengths to compare, how to score them, where to."""

    out: str = option(help="output folder: results.json, report.html, PNGs, cells/, codes/")
    behaviours: list[str] = option(  # noqa: RUF009 (option() gives lists a default factory)
        ["sentiment", "topic-food", "style-enthusiastic"],
        "shipped behaviours to steer (saesteer.steer.behaviours)",
    )
    methods: list[str] = option(  # noqa: RUF009
        ["mean-diff", "bipo", "yapo"],
        "methods: a train-steer method, an alias (yapo-reference, yapo-refit, yapo-md, "
        "sparse-mean-diff), NAME:key=value,... (train-steer options, e.g. "
        "yapo:top_k=64,support_by=effect) or code:DIR (a saved code, not refitted)",
    )
    alphas: str = option(
        "auto",
        "strengths: auto (bracket then bisect each method's α where perplexity crosses the "
        "budget), predicted (rank --strength-grid by a steerability predictor trained on the "
        "other behaviours' rollouts, decode the top --strength-decodes; saesteer.steer.asteer) "
        "or a comma-separated list such as 0.5,1,2,4",
    )
    seeds: int = option(2, "training seeds per method (deterministic methods fit once)")
    model: str = option("smollm2-135m-instruct", "model name or local folder")
    sae: str = option(
        "pretrained:smollm2-l15-topk-8x-k64",
        "SAE for yapo methods (its hook is every method's hook); '' for dense methods only",
    )
    hook_name: str = option(
        "", "hook for methods without an SAE (default: the SAE's, else the middle resid_post)"
    )
    n_prompts: int = option(0, "held-out prompts per behaviour (0: all, 20–36)")
    max_new_tokens: int = option(32, "tokens generated per prompt (greedy)")
    budget: float = option(2.0, "coherence budget: the perplexity limit as a multiple of unsteered")
    auto_max_probes: int = option(6, "alphas auto: strengths tried per (method, seed)")
    strength_grid: str = option("0.5,1,2,3,4,6,8,12", "alphas predicted: the grid it ranks")
    strength_decodes: int = option(3, "alphas predicted: best-ranked strengths decoded")
    strength_trials: int = option(5, "alphas predicted: hyper-parameter draws of each predictor")
    strength_compare: bool = option(
        True, "alphas predicted: also decode the whole grid to report tokens saved at equal success"
    )
    capability: str = option(
        "best",
        "capability retention (multiple choice + held-out Brown perplexity): at each method's "
        "best α within the budget (best), at every cell (all), or never (none)",
        choices=list(CAPABILITY),
    )
    n_capability: int = option(120, "multiple-choice items scored (of 120 shipped)")
    brown_tokens: int = option(2048, "held-out Brown tokens for the capability perplexity")
    epochs: int = option(0, "training epochs of every trained method (0: train-steer's default)")
    boot: int = option(1000, "bootstrap resamples for intervals")
    samples: int = option(3, "sample generations per cell shown in report.html")
    threads: int = option(0, "torch CPU threads (0: torch's default)")
    device: str = option("cpu", "torch device")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        check_at_least(self, ("seeds", "max_new_tokens", "auto_max_probes", "boot"), 1)
        names = ("n_prompts", "n_capability", "brown_tokens", "epochs", "samples", "threads")
        check_at_least(self, names, 0)
        if not math.isfinite(self.budget) or self.budget <= 1:
            raise ValueError(f"--budget must be a finite number > 1, got {self.budget}.")
        if self.capability not in CAPABILITY:
            raise ValueError(f"--capability must be one of {CAPABILITY}, got {self.capability!r}.")
        if not self.behaviours or not self.methods:
            raise ValueError("Give at least one behaviour and one method.")
        self.grid()  # a bad --alphas fails here, before any work
        if self.alphas.strip() == "predicted":
            check_at_least(self, ("strength_decodes", "strength_trials"), 1)
            self.strength_alphas()

    def grid(self) -> list[float] | None:
        """The fixed strengths (sorted, 0 dropped: it is the shared baseline), None for auto."""
        if self.alphas.strip() in ("auto", "predicted"):
            return None
        try:
            values = sorted({float(a) for a in self.alphas.split(",") if a.strip()})
        except ValueError:
            raise ValueError(
                f"--alphas must be 'auto', 'predicted' or numbers separated by commas, got "
                f"{self.alphas!r}."
            ) from None
        values = [a for a in values if a != 0]
        if not values or not all(math.isfinite(a) for a in values):
            raise ValueError(f"--alphas needs finite non-zero strengths, got {self.alphas!r}.")
        return values

    def strength_alphas(self) -> list[float]:
        """--strength-grid as floats (alphas predicted)."""
        from saesteer.steer.asteer.options import parse_grid

        values = parse_grid(self.strength_grid, "--strength-grid")
        if not values:
            raise ValueError("--strength-grid is empty; give strengths such as 0.5,1,2,4,8.")
        return values
