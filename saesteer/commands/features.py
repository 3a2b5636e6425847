"""`saesteer features`: per-latent discovery, a sparse latent cache and a static dashboard."""

from __future__ import annotations

import argparse

from saesteer.config import add_config_arguments, config_from_args
from saesteer.features.config import FeaturesConfig

HELP = (
    "Find what each SAE latent does (top contexts, density, histogram, logit lens, co-firing), "
    "cache each token's top latents, and write an HTML dashboard that opens from disk."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, FeaturesConfig)


def run(args: argparse.Namespace) -> int:
    from saesteer.features.pipeline import run_features

    cfg = config_from_args(FeaturesConfig, args)
    out = run_features(cfg)
    print(f"features:  {out / 'features.json'} (+ features.npz)")
    print(f"latents:   {out / 'latents.h5'}  (SparseLatentCache(path).where_fires(i))")
    if cfg.dashboard:
        print(f"dashboard: {(out / 'dashboard' / 'index.html').resolve().as_uri()}")
    return 0
