"""`saesteer demo`: the whole pipeline on the packaged default model and corpus, offline."""

from __future__ import annotations

import argparse

HELP = "Run the whole pipeline (cache → SAE → features → YaPO code → steered generations → audit)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from saesteer.config import add_config_arguments
    from saesteer.pipeline import PipelineConfig

    add_config_arguments(parser, PipelineConfig)


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from saesteer.config import config_from_args
    from saesteer.pipeline import PipelineConfig, run_pipeline, summary

    start = time.time()
    outputs = run_pipeline(config_from_args(PipelineConfig, args))
    print(f"\ndone in {time.time() - start:.0f} s; seconds per stage: {outputs.seconds}")
    print(json.dumps(summary(outputs), indent=1))
    print("outputs:")
    for name, path in outputs.named():
        print(f"  {name:<14} {path}")
    print("open the audit report and the dashboard in a browser (they are static files).")
    return 0
