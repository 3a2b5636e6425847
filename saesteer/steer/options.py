"""Command-line options for steering any generating command (kept free of torch imports)."""

from __future__ import annotations

import argparse

POSITIONS = ("all", "prompt", "generated")


def add_steering_arguments(parser: argparse.ArgumentParser) -> None:
    """`--steer DIR`, `--alpha A`, `--steer-positions`, `--sae DIR` for a command that generates."""
    group = parser.add_argument_group("steering")
    group.add_argument(
        "--steer", metavar="DIR", help="steering-code folder from `saesteer train-steer`"
    )
    group.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        help="steering strength (sign = direction; 0 = off; default 1.0)",
    )
    group.add_argument(
        "--steer-positions",
        choices=POSITIONS,
        default="all",
        help="which positions to steer (default all)",
    )
    group.add_argument(
        "--sae",
        metavar="DIR",
        help="the code's SAE folder (optional: the code stores what it needs; checked against it)",
    )
