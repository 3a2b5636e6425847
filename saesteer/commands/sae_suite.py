"""`saesteer sae-suite`: build the default model's pretrained SAE suite (`saesteer.sae.suite`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Build the pretrained SAE suite of the default model: cache Brown, train, evaluate, export."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="work folder (resumable)")
    parser.add_argument(
        "--members",
        nargs="+",
        default=None,
        help="suite members to build (default: all; see saesteer.sae.suite.MEMBERS)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="an existing Brown-train cache with the suite's hooks (default: build OUT/brown_train.h5)",
    )
    parser.add_argument(
        "--export",
        type=Path,
        default=None,
        help="write float16 copies and suite.json here (saesteer/data/pretrained to ship them)",
    )
    parser.add_argument("--eval-tokens", type=int, default=32_768, help="held-out tokens per eval")


def run(args: argparse.Namespace) -> int:
    import json

    from saesteer.sae.suite import MEMBERS, build_suite

    unknown = sorted(set(args.members or []) - set(MEMBERS))
    if unknown:
        raise ValueError(f"Unknown suite members {unknown}; the suite has {sorted(MEMBERS)}.")
    entries = build_suite(args.out, args.members, args.cache, args.export, args.eval_tokens)
    keys = ("explained_variance_without_position_0", "l0_without_position_0", "ce_loss_recovered")
    for name, entry in entries.items():
        print(name, json.dumps({k: round(entry["metrics"][k], 4) for k in keys}))
    return 0
