"""`saesteer train-steer`: learn a steering code or intervention from preference pairs."""

from __future__ import annotations

import argparse

HELP = (
    "Learn a steering code from preference pairs: yapo (sparse SAE code), bipo, mean-diff, "
    "selective, swfc, sttp, stmp, cdas, grains, lqr, controller or steer2edit."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from saesteer.config import add_config_arguments
    from saesteer.steer.config import TrainSteerConfig

    add_config_arguments(parser, TrainSteerConfig)


def run(args: argparse.Namespace) -> int:
    from saesteer.config import config_from_args
    from saesteer.steer.config import TrainSteerConfig
    from saesteer.steer.job import train_steer

    config = config_from_args(TrainSteerConfig, args)
    result = train_steer(config)
    meta = result.code.meta
    support = f", support {meta['support_size']} latents" if "support_size" in meta else ""
    print(
        f"{config.method} at {result.code.hook_name}{support}: validation preference "
        f"accuracy {meta.get('val_accuracy', float('nan')):.2f} (reversed α=−1: "
        f"{meta.get('val_accuracy_reversed', float('nan')):.2f}) → {config.out}"
    )
    return 0
