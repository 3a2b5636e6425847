"""ASTEER strength prediction on the shipped behaviours: rollouts, held-out-behaviour F1, search vs grid.

Runs `saesteer.steer.asteer.train.train_strength` (the same as `saesteer train-strength`): for each
behaviour × method (default mean-diff) × α of the grid, K = 5 steered steps + replay as features and
a full 40-token rollout labelled under / success / over; leave-one-behaviour-out macro-F1 of the
HistGradientBoosting predictor; the search-vs-grid table in decoded tokens; a final predictor in
OUT/predictor for `saesteer generate --alpha auto --strength-model OUT/predictor`. Rollouts are
stored in OUT/rollouts/: rerun the same command to continue a killed run.

    .venv/bin/python benchmarks/asteer.py --out runs/asteer                 # ≈ 10–20 min, 2 cores
    .venv/bin/python benchmarks/asteer.py --out runs/asteer2 \\
        --methods mean-diff mean-diff:hook_name=blocks.10.hook_resid_post --install
"""

from __future__ import annotations

import argparse

from saesteer.config import add_config_arguments, config_from_args
from saesteer.steer.asteer.train import TrainStrengthConfig, markdown, train_strength


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, TrainStrengthConfig)
    parser.set_defaults(out="runs/asteer")
    config = config_from_args(TrainStrengthConfig, parser.parse_args(argv))
    report = train_strength(config)
    print(markdown(report))
    print(f"\nresults {config.out}/results.json · predictor {report['predictor']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
