"""`saesteer eval-sae`: reconstruction, sparsity and spliced-model metrics of an SAE on held-out tokens."""

from __future__ import annotations

import argparse
import json

from saesteer.config import add_config_arguments, config_from_args
from saesteer.sae.configs import EvalSAEConfig

HELP = "Evaluate an SAE: explained variance, L0, dead/dense latents, CE recovered and KL; writes eval.json."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, EvalSAEConfig)


def run(args: argparse.Namespace) -> int:
    from saesteer.sae.evals import run_eval

    result = run_eval(config_from_args(EvalSAEConfig, args))
    shown = {k: v for k, v in result.items() if k != "config"}
    print(json.dumps(shown, indent=2))
    return 0
