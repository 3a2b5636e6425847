"""`saesteer train-steer`: learn a steering code (yapo | bipo | mean-diff) from preference pairs."""

from __future__ import annotations

import argparse

HELP = "Learn a steering code from preference pairs: yapo (sparse SAE code), bipo or mean-diff."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from saesteer.config import add_config_arguments
    from saesteer.steer.config import TrainSteerConfig

    add_config_arguments(parser, TrainSteerConfig)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from saesteer.config import config_from_args
    from saesteer.models import load_model
    from saesteer.paths import atomic_directory
    from saesteer.steer.behaviours import BEHAVIOURS, training_data
    from saesteer.steer.config import TrainSteerConfig
    from saesteer.steer.io import META_FILE, save_code
    from saesteer.steer.train import fit_steering

    config = config_from_args(TrainSteerConfig, args)
    if config.out is None:
        raise ValueError("Give --out DIR for the steering code.")
    if config.chat is None:
        config = dataclasses.replace(
            config, chat=config.pairs in BEHAVIOURS and BEHAVIOURS[config.pairs].chat
        )
    train, val = training_data(config.pairs, config.validation, config.val_fraction, config.seed)
    sae = None
    if config.sae:
        from saesteer.sae.io import load_sae

        sae = load_sae(config.sae, device=config.device)
    model, tokenizer = load_model(config.model, device=config.device)
    result = fit_steering(model, tokenizer, train, config, sae=sae, val_pairs=val)
    with atomic_directory(Path(config.out), marker=META_FILE) as tmp:
        save_code(result.code, tmp)
    meta = result.code.meta
    support = f", support {meta['support_size']} latents" if "support_size" in meta else ""
    print(
        f"{config.method} code for {result.code.hook_name}{support}: validation preference "
        f"accuracy {meta.get('val_accuracy', float('nan')):.2f} (reversed α=−1: "
        f"{meta.get('val_accuracy_reversed', float('nan')):.2f}) → {config.out}"
    )
    return 0
