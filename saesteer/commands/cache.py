"""`saesteer cache`: cache hook activations of a model on a corpus to one HDF5 file."""

from __future__ import annotations

import argparse

HELP = "Cache hook activations (e.g. the residual stream) of a model on a corpus to HDF5."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from saesteer.cache_job import CacheConfig
    from saesteer.config import add_config_arguments

    add_config_arguments(parser, CacheConfig)
    parser.epilog = (
        "Example: saesteer cache --out acts.h5 --hook blocks.15.hook_resid_post --tokens 65536 "
        "--dtype float16.  A killed run continues with the same command plus --resume.  "
        "Several processes: torchrun --nproc_per_node=N -m saesteer cache ...  "
        "File format: docs/cache_format.md."
    )


def run(args: argparse.Namespace) -> int:
    import os
    import time

    from saesteer.cache_job import CacheConfig, run_cache
    from saesteer.config import config_from_args

    config = config_from_args(CacheConfig, args)
    start = time.time()
    path = run_cache(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    from activations_cache import open_cache

    with open_cache(path) as reader:
        seconds = time.time() - start
        size = os.path.getsize(path)
        print(
            f"wrote {path}: {reader.n_tokens} tokens × {len(reader.hooks)} hook(s) "
            f"({', '.join(f'{h} d={reader.d_model(h)}' for h in reader.hooks)}), {reader.storage_dtype}, "
            f"{size / reader.n_tokens:.0f} bytes/token, {seconds:.1f} s ({reader.n_tokens / seconds:.0f} tok/s "
            "including model load)"
        )
    return 0
