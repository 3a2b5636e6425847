"""`FeaturesConfig`: the one config of a feature-discovery job (CLI, config file and Python API)."""

from __future__ import annotations

from dataclasses import dataclass

from saesteer.config import check_at_least, option


@dataclass
class FeaturesConfig:
    """Where the SAE and activations are, where results go, and how much to keep per latent."""

    sae: str = option("", "SAE folder written by `saesteer train-sae` (or a sae-lens SAE folder)")
    cache: str = option("", "activation cache (HDF5) holding the SAE's hook")
    out: str = option("", "output folder (default: <sae>/features)")
    model: str = option("", "model for the logit lens and prompts (default: the SAE's model)")
    hook: str = option("", "cached hook to read (default: the SAE's hook_name)")
    n_top: int = option(20, "top-activating examples kept per latent")
    n_samples: int = option(10, "weaker examples per latent, picked at evenly spaced quantiles")
    window_before: int = option(12, "context tokens shown before an example's token")
    window_after: int = option(4, "context tokens shown after an example's token")
    n_logit: int = option(10, "tokens listed as promoted and as suppressed by each latent")
    n_cofire: int = option(8, "co-firing latents listed per latent")
    sparse_k: int = option(32, "latents kept per token in the sparse latent cache (its top k)")
    batch_contexts: int = option(32, "contexts encoded per batch (memory ∝ this × context × d_sae)")
    max_tokens: int = option(0, "read only the first N cached tokens (0: all; whole contexts)")
    prompts: list[str] = option(  # noqa: RUF009 (option gives lists a default_factory)
        [], "prompts that get a dashboard page of latents per token"
    )
    dashboard: bool = option(True, "write the static HTML dashboard (<out>/dashboard/index.html)")
    device: str = option("cpu", "torch device for encoding")
    seed: int = option(0, "seed of the random quantile sample")

    def __post_init__(self) -> None:
        check_at_least(self, ("n_top", "n_samples", "n_logit", "sparse_k", "batch_contexts"), 1)
        check_at_least(self, ("window_before", "window_after", "n_cofire", "max_tokens"), 0)
