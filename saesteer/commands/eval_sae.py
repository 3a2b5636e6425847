"""`saesteer eval-sae`: reconstruction, sparsity and spliced-model metrics of an SAE on held-out tokens."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from saesteer.config import add_config_arguments, config_from_args
from saesteer.sae.configs import EvalSAEConfig

HELP = "Evaluate an SAE: explained variance, L0, dead/dense latents, CE recovered and KL; writes eval.json."
# Metrics that are finite for any SAE and model with finite outputs (CE recovered may be NaN
# legitimately: when zeroing the hook does not change the loss).
MUST_BE_FINITE = ("explained_variance", "mse_per_token", "l0", "ce_clean", "ce_sae", "kl_sae")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, EvalSAEConfig)


def non_finite_metrics(result: dict[str, Any]) -> list[str]:
    """The names in `MUST_BE_FINITE` whose value in `result` is NaN or ±inf."""
    return [
        name
        for name in MUST_BE_FINITE
        if isinstance(result.get(name), int | float) and not math.isfinite(result[name])
    ]


def run(args: argparse.Namespace) -> int:
    """Print the metrics; a NaN/inf reconstruction metric is an error (exit 2), not a result."""
    from saesteer.sae.evals import run_eval

    result = run_eval(config_from_args(EvalSAEConfig, args))
    shown = {k: v for k, v in result.items() if k != "config"}
    print(json.dumps(shown, indent=2))
    bad = non_finite_metrics(result)
    if bad:
        raise ValueError(
            f"{', '.join(bad)} came out NaN/inf: the SAE or the model produces non-finite values "
            "on these tokens (e.g. weights so large that they overflow), so these metrics mean "
            "nothing. Check the SAE's weights, or retrain it."
        )
    return 0
