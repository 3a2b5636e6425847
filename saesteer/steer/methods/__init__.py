"""Steering methods that return an `Intervention` (sites × operators × gates), one module each:

    selective   Selective Steering: norm-preserving rotation at discriminative layers    selective.py
    swfc        fixed-coefficient addition along a logistic-regression probe            probes.py
    sttp        steer-to-target-projection, gated below a distributional threshold     probes.py
    stmp        steer-to-mirror-projection, gated below a distributional threshold     probes.py
    cdas        rank-1 distributed interchange trained by JSD distribution matching     cdas.py
    grains      Integrated-Gradients token ablation → vector, added with norm rescaling grains.py
    steer2edit  sparse rank-1 o_proj / down_proj weight edits (a `WeightEdit`)         steer2edit.py
    lqr         A-LQR: feedback u = K e across layers, Riccati gains from Jacobians    lqr.py
    controller  Guiding Giants: an MLP sets per prompt the strength and layer weights   controller.py
                (returns a `saesteer.steer.controlled.Controller`)

Each module's `fit(model, tokenizer, train_pairs, config) → Intervention` reads a TransformerLens
`model` and `TrainSteerConfig` (its formula in the module docstring). `fit_intervention` wraps it
for `train-steer` and the benchmark: the hyper-parameters, data checksum and fit time go into the
intervention's meta, and the held-out preference accuracy at α = ±1 (`preference_accuracy`).
The three code methods (yapo, bipo, mean-diff) live in `saesteer.steer.train`.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Sequence
from typing import Any

import torch

from saesteer.steer.batching import completion_logprobs, preference_margins, tokenize_pairs
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.intervention import Intervention
from saesteer.steer.pairs import PreferencePair, pairs_checksum

MODULES = {
    "selective": "selective",
    "swfc": "probes",
    "sttp": "probes",
    "stmp": "probes",
    "cdas": "cdas",
    "grains": "grains",
    "steer2edit": "steer2edit",
    "lqr": "lqr",
    "controller": "controller",
}
RUN_ONLY = ("out", "progress", "resume")
CHUNK_ROWS = 16


def fit_intervention(
    model,
    tokenizer,
    train_pairs: Sequence[PreferencePair],
    config: TrainSteerConfig,
    val_pairs: Sequence[PreferencePair] | None = None,
):
    """Fit `config.method` (an intervention method) and record how; returns a `TrainResult`."""
    from saesteer.steer.train import TrainResult

    if config.method not in MODULES:
        raise ValueError(f"{config.method!r} is not an intervention method ({sorted(MODULES)}).")
    module = importlib.import_module(f"saesteer.steer.methods.{MODULES[config.method]}")
    torch.manual_seed(config.seed)
    started = time.time()
    intervention: Intervention = module.fit(model, tokenizer, list(train_pairs), config)
    intervention.meta.update(
        hyper_parameters={k: v for k, v in vars(config).items() if k not in RUN_ONLY},
        data_checksum=pairs_checksum(train_pairs),
        n_train_pairs=len(train_pairs),
        val_data_checksum=pairs_checksum(val_pairs) if val_pairs else None,
        train_seconds=round(time.time() - started, 2),
        sites=[site.name for site in intervention.sites],
    )
    if val_pairs:
        for alpha, key in ((1.0, "val_accuracy"), (-1.0, "val_accuracy_reversed")):
            intervention.meta[key] = preference_accuracy(
                model,
                tokenizer,
                val_pairs,
                intervention,
                alpha,
                bool(config.chat),
                config.max_length,
            )
    return TrainResult(intervention, intervention.meta.get("history", []))


@torch.no_grad()
def preference_accuracy(
    model,
    tokenizer,
    pairs: Sequence[PreferencePair],
    intervention: Any,
    alpha: float = 1.0,
    chat: bool = False,
    max_length: int = 128,
) -> float:
    """Share of pairs with r(y_w) > r(y_l), r(y) = log π_α(y|x) − log π_0(y|x), π_α steered."""
    from saesteer.steer.hooks import steer

    tokens = tokenize_pairs(tokenizer, pairs, chat, max_length)
    device = model.cfg.device
    steered, plain = [], []
    for lo in range(0, tokens.input_ids.shape[0], CHUNK_ROWS):
        ids = tokens.input_ids[lo : lo + CHUNK_ROWS].to(device)
        mask = tokens.target_mask[lo : lo + CHUNK_ROWS].to(device)
        plain.append(completion_logprobs(model(ids), ids, mask).cpu())
        scoring = getattr(intervention, "scoring", None)  # a controller: where each prompt ends
        with (
            steer(model, intervention, alpha),
            scoring(mask.argmax(1)) if scoring else contextlib.nullcontext(),
        ):
            steered.append(completion_logprobs(model(ids), ids, mask).cpu())
    margins = preference_margins(torch.cat(steered), torch.cat(plain))
    return float((margins > 0).float().mean())
