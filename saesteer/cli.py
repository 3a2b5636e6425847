"""The `saesteer` command: one subcommand per job, each a module in `saesteer/commands/`.

Commands are discovered: a module `saesteer/commands/NAME.py` defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`, and
imports heavy libraries inside `run` so `saesteer --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import saesteer.commands

# Pipeline order for `saesteer --help`; any other module in saesteer/commands/ follows, sorted.
COMMAND_ORDER = [
    "info",
    "prepare",
    "cache",
    "train-sae",
    "eval-sae",
    "sae-suite",
    "features",
    "train-steer",
    "generate",
    "audit",
    "bench-steer",
    "demo",
]


def command_names() -> list[str]:
    """Every command module in `saesteer/commands/` (`train_sae.py` → `train-sae`), in help order."""
    found = {m.name.replace("_", "-") for m in pkgutil.iter_modules(saesteer.commands.__path__)}
    ordered = [name for name in COMMAND_ORDER if name in found]
    return ordered + sorted(found - set(ordered))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saesteer",
        description=(
            "Sparse-autoencoder interpretability and steering: cache activations, train SAEs, "
            "discover features, learn sparse steering codes, steer generation, audit it."
        ),
        epilog="Run `saesteer COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_names():
        module = importlib.import_module(f"saesteer.commands.{name.replace('-', '_')}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.add_argument("--debug", action="store_true", help="show tracebacks on errors")
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError, KeyError, RuntimeError) as error:
        if args.debug:
            raise
        print(f"saesteer {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
