"""`run_features`: SAE folder + activation cache → discovery results, sparse latent cache, dashboard.

<out>/                         (default <sae>/features)
  features.npz, features.json  `FeatureStats` (+ config, SAE checksum, source, versions)
  latents.h5                   sparse latent cache (`SparseLatentCache`)
  config.json                  the `FeaturesConfig` of this run
  dashboard/index.html         static dashboard (open it from disk)
"""

from __future__ import annotations

import time
from pathlib import Path

from saesteer.config import config_to_dict, save_config
from saesteer.features.config import FeaturesConfig
from saesteer.features.dashboard import write_dashboard
from saesteer.features.discovery import discover_features
from saesteer.features.prompts import prompt_latents
from saesteer.features.source import CachedActivations, check_cache_model
from saesteer.features.sparse_cache import SparseLatentWriter
from saesteer.outputs import Output

SPARSE_FILE = "latents.h5"
N_PROMPT_LATENTS = 8


def run_features(cfg: FeaturesConfig, progress: bool = True) -> Path:
    """Run a discovery job (module docstring); returns the output folder."""
    from saesteer.sae.io import load_sae, output_beside_sae

    if not cfg.sae or not cfg.cache:
        raise ValueError("Feature discovery needs --sae DIR and --cache PATH.")
    sae = load_sae(cfg.sae, device=cfg.device).requires_grad_(False)
    model_name = cfg.model or sae.cfg.model_name
    hook = cfg.hook or sae.cfg.hook_name
    if not model_name or not hook:
        raise ValueError(
            f"The SAE in {cfg.sae} does not record its model or hook; pass --model and --hook."
        )
    output = Output(output_beside_sae(cfg.sae, cfg.out, "features"), "features")
    with output:  # a foreign --out (e.g. one holding your config.json) is refused before any work
        return _discover(cfg, sae, model_name, hook, output, progress)


def _discover(
    cfg: FeaturesConfig, sae, model_name: str, hook: str, output: Output, progress: bool
) -> Path:
    """The discovery itself; the folder is created only once the inputs passed their checks."""
    from saesteer.models import MODEL_ALIASES, load_model
    from saesteer.sae.io import library_versions, sae_checksum

    table = CachedActivations(cfg.cache, hook, cfg.max_tokens)
    cached_model = str(table.reader.attrs.get("model_name") or "")
    if cached_model and MODEL_ALIASES.get(cached_model, cached_model) != MODEL_ALIASES.get(
        model_name, model_name
    ):
        raise ValueError(
            f"The cache {cfg.cache} holds activations of {cached_model!r}, but the SAE reads "
            f"{model_name!r}; pass a cache made with the SAE's model (or --model to override)."
        )
    model, tokenizer = load_model(model_name, device=cfg.device)
    check_cache_model(table.reader, model, model_name)  # same name, other weights: refused
    out = output.in_place()
    checksum = sae_checksum(sae)
    started = time.time()
    writer = SparseLatentWriter(
        out / SPARSE_FILE,
        table.n_tokens,
        cfg.sparse_k,
        {
            "d_sae": sae.cfg.d_sae,
            "context_length": table.context_length,
            "hook": hook,
            "sae_checksum": checksum,
        },
    )
    stats = discover_features(sae, table, model, cfg, sparse_writer=writer, progress=progress)
    writer.close(table.tokens)
    stats.meta.update(
        config=config_to_dict(cfg),
        model=model_name,
        sae={
            "path": str(cfg.sae),
            "arch": sae.cfg.arch,
            "d_sae": sae.cfg.d_sae,
            "checksum": checksum,
        },
        versions=library_versions(),
        seconds=round(time.time() - started, 1),
    )
    stats.save(out)
    save_config(cfg, out / "config.json")
    if cfg.dashboard:
        prompts = prompt_latents(model, sae, hook, cfg.prompts, N_PROMPT_LATENTS)
        write_dashboard(
            stats,
            tokenizer,
            out / "dashboard",
            prompts,
            title=f"{Path(cfg.sae).name} · {hook}",
            about=f"{model_name} · {sae.cfg.arch} SAE, {sae.cfg.d_sae} latents · "
            f"{stats.n_tokens:,} tokens",
            label_key=checksum,
        )
    return out
