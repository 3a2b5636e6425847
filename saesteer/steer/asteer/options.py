"""`--alpha auto`, `--strength-model DIR`, `--alpha-grid` for `saesteer generate` (no torch import)."""

from __future__ import annotations

import argparse
import math

AUTO = "auto"


def alpha_or_auto(text: str) -> float | str:
    """argparse type of a --alpha that may be 'auto'."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--alpha must be a number or 'auto', got {text!r}."
        ) from None


def parse_grid(text: str | None, name: str = "--alpha-grid") -> list[float] | None:
    """'1,2,4' → [1.0, 2.0, 4.0]; None or '' → None (the predictor's grid); finite numbers only."""
    if text is None or not text.strip():
        return None
    try:
        values = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise ValueError(f"{name} must be numbers separated by commas, got {text!r}.") from None
    if not values or not all(math.isfinite(a) for a in values):
        raise ValueError(f"{name} needs finite strengths, e.g. 1,2,4,8; got {text!r}.")
    return values


def add_auto_arguments(parser: argparse.ArgumentParser) -> None:
    """Let the (already added) --alpha be 'auto' and add the predictor's options."""
    for action in parser._actions:
        if action.dest == "alpha":
            action.type = alpha_or_auto
            action.help = (
                "steering strength (sign = direction; 0 = off; default 1.0), or 'auto': per "
                "prompt, the grid α with the highest predicted P(success) (--strength-model)"
            )
    group = parser.add_argument_group("automatic strength (--alpha auto)")
    group.add_argument(
        "--strength-model",
        metavar="DIR",
        help="strength predictor folder (benchmarks/asteer.py --out DIR writes DIR/predictor); "
        "default: SAESTEER_CACHE_DIR/strength-models/default",
    )
    group.add_argument(
        "--alpha-grid",
        metavar="A,B,...",
        help="strengths --alpha auto chooses from (default: the predictor's training grid)",
    )
