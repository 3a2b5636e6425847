"""`saesteer train-strength`: a steerability predictor for `generate --alpha auto`, with its scores."""

from __future__ import annotations

import argparse

HELP = (
    "Train a strength predictor (ASTEER): rollouts per behaviour × method × α, held-out-behaviour "
    "macro-F1, search vs grid in decoded tokens; use it with generate --alpha auto."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from saesteer.config import add_config_arguments
    from saesteer.steer.asteer.train import TrainStrengthConfig

    add_config_arguments(parser, TrainStrengthConfig)
    parser.epilog = (
        "Example: saesteer train-strength --out runs/strength --install   (rerun the same "
        "command to continue a killed run; then saesteer generate --steer CODE --alpha auto)."
    )


def run(args: argparse.Namespace) -> int:
    from saesteer.config import config_from_args
    from saesteer.steer.asteer.train import TrainStrengthConfig, markdown, train_strength

    config = config_from_args(TrainStrengthConfig, args)
    report = train_strength(config)
    print(markdown(report))
    print(f"\nresults {config.out}/results.json · predictor {report['predictor']}")
    return 0
