"""`saesteer train-sae`: train an SAE on cached activations (or a model run on the fly)."""

from __future__ import annotations

import argparse
import json
import os

from saesteer.config import add_config_arguments, config_from_args
from saesteer.sae.configs import TrainSAEConfig

HELP = "Train an SAE (relu | topk | batchtopk | jumprelu) from an activation cache; resumable, torchrun-ready."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, TrainSAEConfig)


def run(args: argparse.Namespace) -> int:
    from saesteer.sae.trainer import train_sae

    cfg = config_from_args(TrainSAEConfig, args)
    result = train_sae(cfg)
    if (
        os.environ.get("RANK", "0") == "0"
    ):  # under torchrun, rank 0 speaks (its last batch's metrics)
        print(json.dumps({"sae": str(result.path), **result.metrics}, indent=2))
    return 0
