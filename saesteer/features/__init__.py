"""Feature discovery: per-latent statistics, a sparse latent cache, and a static dashboard.

    from saesteer.features import FeaturesConfig, run_features          # the whole job (CLI: `saesteer features`)
    stats = discover_features(sae, ArrayActivations(acts, tokens), model, FeaturesConfig(n_top=20))
    write_dashboard(stats, tokenizer, "out/dashboard", prompt_latents(model, sae, hook, ["Hi"]))
    SparseLatentCache("out/latents.h5").where_fires(123)                # → token indices, values

Names load lazily, so `import saesteer.features.config` (the CLI) does not import torch.
"""

from __future__ import annotations

from saesteer.lazy import lazy_exports

_EXPORTS = {
    "FeaturesConfig": "config",
    "ArrayActivations": "source",
    "CachedActivations": "source",
    "FeatureStats": "discovery",
    "discover_features": "discovery",
    "LogitLens": "logit_lens",
    "logit_lens": "logit_lens",
    "SparseLatentCache": "sparse_cache",
    "SparseLatentWriter": "sparse_cache",
    "PromptLatents": "prompts",
    "prompt_latents": "prompts",
    "write_dashboard": "dashboard",
    "run_features": "pipeline",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
