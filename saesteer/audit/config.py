"""`AuditConfig`: one dataclass for `saesteer audit`, config files and `run_audit`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from saesteer.config import check_at_least, option

# Prompts with no behaviour in them: the steered model should predict their next tokens as before.
NEUTRAL_PROMPTS = (
    "The train to the city leaves the station at",
    "Water boils at one hundred degrees Celsius when",
    "To install the package, open a terminal and type",
    "The committee will meet on Tuesday to discuss the",
    "Photosynthesis is the process by which plants",
    "The museum is open from nine in the morning until",
    "In 1969, the first astronauts landed on the",
    "The recipe calls for two cups of flour and",
)
GENERATORS = ("auto", "hf", "transformer_lens")


@dataclass
class AuditConfig:
    """What to audit (a steering code, dense vector or intervention), on what, at which strengths,
    and where to."""

    steer: str = option(help="steering-code or intervention folder (from `saesteer train-steer`)")
    out: str = option(help="output folder for report.html, report.json and strength_curve.png")
    alphas: list[float] = option(  # noqa: RUF009 (option() gives lists a default factory)
        [-2.0, 0.0, 1.0, 2.0, 4.0], "strengths to sweep (α = 0, the baseline, is always added)"
    )
    model: str = option("", "model name or folder (default: the code's model)")
    sae: str = option(
        "",
        "the SAE folder of the steered layer (default: the one the code was trained with); "
        "needed for latent changes and a dense vector's nearest latents. For an intervention: an "
        "SAE of the residual after its last edit (latent changes) or of an edited residual site "
        "(its directions' nearest latents)",
    )
    later_sae: str = option(
        "", "an SAE of a later layer's resid_post: adds latent changes there (optional)"
    )
    later_layer: int = option(
        -1,
        "the later layer L whose blocks.L.hook_resid_post is measured (-1: the later SAE's, else auto)",
    )
    features: str = option(
        "", "feature-discovery folder of the SAE (default: <sae>/features when it exists)"
    )
    dashboard: str = option(
        "", "dashboard folder to link latents to (default: <features>/dashboard when it exists)"
    )
    behaviour: str = option(
        "",
        "shipped behaviour whose scorer and validation split are used (default: the code's pairs)",
    )
    validation: str = option(
        "", "validation pairs JSONL (default: the behaviour's validation split)"
    )
    chat: bool | None = option(None, "wrap prompts in the chat template (default: the behaviour's)")
    n_prompts: int = option(6, "distinct validation prompts generated from at every strength")
    max_pairs: int = option(24, "validation pairs scored for preference log-odds (0: all)")
    neutral: str = option("", "text file of neutral prompts, one a line (default: built-in list)")
    max_new_tokens: int = option(32, "tokens generated per prompt")
    temperature: float = option(0.0, "sampling temperature (0: greedy)")
    positions: str = option(
        "all", "positions steered during generation", choices=["all", "prompt", "generated"]
    )
    generator: str = option(
        "auto",
        "generation model: hf (fast, needs Hugging Face weights), transformer_lens, or auto",
        choices=list(GENERATORS),
    )
    ngram: int = option(3, "n of the n-gram repetition rate")
    n_latents: int = option(10, "latents listed per table (top changes, nearest latents)")
    n_examples: int = option(3, "example generations shown per strength in report.html")
    max_length: int = option(128, "tokens per validation pair (prompt cut from the left)")
    seed: int = option(0, "sampling seed")
    device: str = option("cpu", "torch device")

    def __post_init__(self) -> None:
        bad = [a for a in self.alphas if not math.isfinite(float(a))]
        if bad:
            raise ValueError(
                f"--alphas must be finite numbers, got {bad}: NaN or infinite strength makes "
                "every steered activation NaN. Use e.g. --alphas -2 1 2 4."
            )
        self.alphas = sorted({float(a) for a in self.alphas} | {0.0})
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(
                f"--temperature must be a finite number ≥ 0, got {self.temperature}; use 0 for "
                "greedy decoding or e.g. 0.7 to sample."
            )
        check_at_least(self, ("n_prompts", "max_new_tokens", "ngram", "n_latents", "max_length"), 1)
        check_at_least(self, ("n_examples", "max_pairs"), 0)
        if self.generator not in GENERATORS:
            raise ValueError(f"--generator must be one of {GENERATORS}, got {self.generator!r}.")
