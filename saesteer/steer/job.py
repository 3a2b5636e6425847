"""`train_steer(config)`: the `saesteer train-steer` job as a library function.

Checks `--out` before any work (`saesteer.outputs`: a foreign folder or a file is refused, a
second writer fails fast), reads the pairs (a shipped data set's train and validation splits, or a
file split by `val_fraction`), fits the code (`saesteer.steer.train.fit_steering`) and swaps the
saved code folder into place in one step. Training checkpoints after every epoch into the sibling
`OUT.partial/` (`saesteer.steer.checkpoint`): after a kill, the same command with `--resume`
continues it and ends with the same code as an uninterrupted run. The CLI, the demo pipeline and notebooks call this.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.train import TrainResult

KIND = "steering-code"


def train_steer(
    config: TrainSteerConfig, model: Any = None, tokenizer: Any = None, sae: Any = None
) -> TrainResult:
    """Fit and save a code as `config` says; pass loaded `model`/`tokenizer`/`sae` to reuse them."""
    from saesteer.outputs import Output
    from saesteer.steer.behaviours import BEHAVIOURS, training_data
    from saesteer.steer.checkpoint import SteerCheckpoints, partial_folder
    from saesteer.steer.io import save_code
    from saesteer.steer.pairs import pairs_checksum
    from saesteer.steer.train import RUN_ONLY, fit_steering

    if config.out is None:
        raise ValueError("Give --out DIR for the steering code.")
    output = Output(config.out, KIND)
    if config.chat is None:
        chat = config.pairs in BEHAVIOURS and BEHAVIOURS[config.pairs].chat
        config = dataclasses.replace(config, chat=chat)
    train, val = training_data(config.pairs, config.validation, config.val_fraction, config.seed)
    train = train[: config.max_pairs or None]
    checkpoints = None
    if config.method in ("yapo", "bipo"):  # the other methods have no epochs to resume
        job = {k: v for k, v in vars(config).items() if k not in (*RUN_ONLY, "device")}
        job["data_checksum"] = pairs_checksum(train)
        checkpoints = SteerCheckpoints(partial_folder(config.out), job, config.resume)
    with output, checkpoints or contextlib.nullcontext():
        if sae is None and config.sae:
            from saesteer.sae.io import load_sae

            sae = load_sae(config.sae, device=config.device).requires_grad_(False)
        if model is None:
            from saesteer.models import load_model

            model, tokenizer = load_model(config.model, device=config.device)
        result = fit_steering(
            model, tokenizer, train, config, sae=sae, val_pairs=val, checkpoints=checkpoints
        )
        with output.replacing() as tmp:
            save_code(result.code, tmp)
        if checkpoints is not None:
            checkpoints.finish()
    return result
