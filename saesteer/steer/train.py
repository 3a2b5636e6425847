"""Learn a steering code from preference pairs: YaPO (sparse SAE code), BiPO (dense), mean-difference.

Objective (YaPO and BiPO), per pair (x, y_w, y_l) and a direction d ∈ {+1, −1} drawn per micro-batch:

    r(y)  = log π_{d·v}(y | x) − log π_0(y | x)          π_0: the unsteered model (reference)
    loss  = −log σ( d · β · (r(y_w) − r(y_l)) ) + λ · ‖v‖₁

π_{d·v} runs the model with the code applied at α = d on every position:
    BiPO  h' = h + d · v                                          v [d_model], starts at 0
    YaPO  h' = h + (relu(z + d · v) − z) · W_dec,  z = encode(h)   v [d_sae],   starts at 0
YaPO modes (`--yapo-mode`; the step rules are in `saesteer.steer.optimise`):

    reference   the YaPO/BiPO reference recipe: no cap, no L1, weight decay 0, linear warm-up then
                cosine decay, gradient clipping 1.0. The support is "latents active somewhere in the
                training data" (relu has zero gradient at z_i + v_i = 0 when v starts at 0).
    refit       (the default, with `--support-by mean-diff`, measured in benchmarks/RESULTS.md:
                stable support across seeds, best 32-latent code at equal coherence)
                reference training for `epochs`, then keep k latents chosen from the dense code
                (`--support-by` effect | magnitude | omp, `saesteer.steer.sparse_support`), then
                `refit_epochs` more on that frozen support from the dense values (fresh AdamW).
                `--support-by mean-diff` skips the dense phase: the support and the starting
                values are the k-latent OMP fit of the pairs' mean difference m onto the decoder
                rows (v_S = argmin ‖m − v_S · W_dec[S]‖; for an active latent relu(z + v) − z = v,
                so at α = 1 the code starts as a sparse copy of the mean-difference edit), then
                `epochs` of preference training on that support.
    anneal      one run whose cap shrinks geometrically from d_sae to k over the first
                `anneal_fraction` of the steps, then stays at k.
    l1          proximal L1 (soft-threshold c·lr_t·λ_t after each step) with λ_t ramped from 0 over
                the first `anneal_fraction` of the steps; the k largest |v_i| are kept at the end.
Why not a cap from the first step: AdamW's first step moves every coordinate that has a gradient by
≈ lr, so all |v_i| tie and a top-k cut then picks the support from near-ties on one micro-batch.
BiPO always trains with the reference recipe.

Step size in activation units. AdamW moves each coordinate of v by about its learning rate per step,
whatever the gradient's scale, so with a raw lr the code can never grow past lr × steps. Activations
are not O(1): on SmolLM2-135M at blocks.15.hook_resid_post an active TopK latent is ≈ 10 and
‖h‖ ≈ 170, so a raw lr of 0.03 over 30 steps gave v_i ≤ 0.38 and ‖Δh‖ ≈ 1.3 at α = 1 (< 1 % of ‖h‖):
preference accuracy 1.0 but generations unchanged. So `lr` is relative to the scale c of what v
edits, measured on the training completions before training:

    YaPO  c = mean of the non-zero latents z_i > 0                 (a typical active latent)
    BiPO  c = ‖h‖ / √d_model, averaged over tokens                   (a typical residual coordinate)
    AdamW runs with lr·c (cosine decay); the L1 threshold is c·lr_t·λ.

Adam's update is invariant to the gradient's scale, so the Adam and L1 steps are those of AdamW on
u = v / c with learning rate lr: `lr` and `λ` mean the same on any model, layer or SAE normalisation.
The decoupled weight decay is not rescaled: it shrinks v by the factor (1 − c·lr_t·wd) per step
(the demo's numbers were measured so).

Mean-difference (CAA): v = mean over pairs of [mean_t h_w(t) − mean_t h_l(t)] over completion tokens.

Cost: the steered layer's input to the layers above never changes, so the residual stream at the hook
is computed once (`stop_at_layer`) and cached, the reference log-probs once from it, and each step runs
only the layers above the hook (`start_at_layer`): gradients flow through those layers only.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from saesteer.hook_names import resid_post, start_layer
from saesteer.steer.batching import (
    TokenizedPairs,
    completion_logprobs,
    preference_margins,
    tokenize_pairs,
)
from saesteer.steer.checkpoint import SteerCheckpoints
from saesteer.steer.codes import DenseVector, LatentCode, SteeringCode
from saesteer.steer.config import INTERVENTION_METHODS, TrainSteerConfig
from saesteer.steer.intervention import Intervention
from saesteer.steer.latent import full_latent_steer
from saesteer.steer.optimise import (
    Curves,
    Phase,
    annealed_cap,
    keep_top_,
    optimise,
    ramp,
    soft_threshold_,
)
from saesteer.steer.pairs import PreferencePair, pairs_checksum
from saesteer.steer.sparse_support import select_support, sparse_fit

CHUNK_ROWS = 16  # rows per no-grad forward when caching / evaluating


@dataclass
class TrainResult:
    """The learned code and what happened while learning it."""

    code: SteeringCode | Intervention
    history: list[dict[str, float]] = field(default_factory=list)
    dense_values: torch.Tensor | None = None
    """yapo refit/l1: the code before its support was cut (what reference mode would return)."""


RUN_ONLY = ("out", "progress", "resume")  # options that do not change the code


@dataclass
class _CachedSplit:
    """One split's tokens, residual at the hook [rows, T, d] and reference log-probs [rows]."""

    tokens: TokenizedPairs
    resid: torch.Tensor
    logp_ref: torch.Tensor


@torch.no_grad()
def _cache_split(model, tokens: TokenizedPairs, layer: int, device: str) -> _CachedSplit:
    resid, logp = [], []
    for lo in range(0, tokens.input_ids.shape[0], CHUNK_ROWS):
        ids = tokens.input_ids[lo : lo + CHUNK_ROWS].to(device)
        h = model(ids, stop_at_layer=layer) if layer > 0 else model.embed(ids)
        logits = model(h, start_at_layer=layer)
        resid.append(h)
        logp.append(
            completion_logprobs(logits, ids, tokens.target_mask[lo : lo + CHUNK_ROWS].to(device))
        )
    return _CachedSplit(tokens, torch.cat(resid), torch.cat(logp))


def _logprobs_above(
    model, split: _CachedSplit, rows: torch.Tensor, layer: int, apply
) -> torch.Tensor:
    """log π(y|x) [len(rows)] with h' = apply(h) fed to the layers from `layer` up."""
    ids = split.tokens.input_ids[rows].to(split.resid.device)
    mask = split.tokens.target_mask[rows].to(split.resid.device)
    logits = model(apply(split.resid[rows]), start_at_layer=layer)
    return completion_logprobs(logits, ids, mask)


@torch.no_grad()
def validation_margins(model, split: _CachedSplit, layer: int, apply) -> torch.Tensor:
    """r(y_w) − r(y_l) per pair [n_pairs] when steering with `apply` (0 for the identity)."""
    logp = torch.cat(
        [
            _logprobs_above(
                model,
                split,
                torch.arange(lo, min(lo + CHUNK_ROWS, split.resid.shape[0])),
                layer,
                apply,
            )
            for lo in range(0, split.resid.shape[0], CHUNK_ROWS)
        ]
    )
    return preference_margins(logp, split.logp_ref)


def preference_accuracy(model, split: _CachedSplit, layer: int, apply) -> float:
    """Fraction of pairs with r(y_w) > r(y_l) when steering with `apply` (DPO's reward accuracy)."""
    return (validation_margins(model, split, layer, apply) > 0).float().mean().item()


def effect_size(code: SteeringCode, split: _CachedSplit) -> dict[str, float]:
    """How big the edit is at α = 1 on the completion tokens of `split`:

    effect_norm  = mean_t ‖h'_t − h_t‖        (residual-space size of the edit)
    effect_ratio = effect_norm / mean_t ‖h_t‖  (relative to the residual stream it edits)
    """
    h = split.resid[split.tokens.target_mask.to(split.resid.device) > 0]
    norm = code.effect_norm(h, 1.0)
    return {"effect_norm": norm, "effect_ratio": norm / h.norm(dim=-1).mean().item()}


def mean_difference(split: _CachedSplit) -> torch.Tensor:
    """v [d] = mean over pairs of (mean completion activation of y_w − that of y_l)."""
    mask = split.tokens.target_mask.to(split.resid.device)[..., None]
    per_row = (split.resid * mask).sum(1) / mask.sum(1).clamp_min(1)
    return (per_row[0::2] - per_row[1::2]).mean(0)


def activation_scale(method: str, split: _CachedSplit, sae) -> float:
    """c of the module docstring, over the completion tokens of `split`."""
    h = split.resid[split.tokens.target_mask.to(split.resid.device) > 0]
    with torch.no_grad():
        if method == "yapo":
            z = sae.encode(h)
            return z[z > 0].mean().item()
        return (h.norm(dim=-1) / math.sqrt(h.shape[-1])).mean().item()


def _steering_fn(method: str, sae, v: torch.Tensor):
    """apply(h, alpha) for the trainable v of `method`."""
    if method == "yapo":
        return lambda h, alpha: full_latent_steer(sae, h, v, alpha)
    return lambda h, alpha: h + alpha * v


def fit_steering(
    model,
    tokenizer,
    train_pairs: Sequence[PreferencePair],
    config: TrainSteerConfig,
    sae=None,
    val_pairs: Sequence[PreferencePair] | None = None,
    checkpoints: SteerCheckpoints | None = None,
) -> TrainResult:
    """Learn a steering code (module docstring) with a HookedTransformer `model`.

    `sae` is required for yapo and fixes the hook; bipo/mean-diff use `config.hook_name` (default: the
    SAE's hook, else the middle layer's resid_post). `val_pairs` defaults to none (no accuracy).
    `checkpoints`: save and resume the optimiser after every epoch (`saesteer.steer.checkpoint`).
    """
    method = config.method
    if method in INTERVENTION_METHODS:
        from saesteer.steer.methods import fit_intervention

        return fit_intervention(model, tokenizer, train_pairs, config, val_pairs)
    if method == "yapo" and sae is None:
        raise ValueError("yapo learns a code in an SAE's latent space: pass an SAE (--sae DIR).")
    hook_name = (
        config.hook_name
        or (sae.cfg.hook_name if sae is not None else None)
        or resid_post(model.cfg.n_layers // 2)
    )
    if (
        sae is not None
        and sae.cfg.hook_name
        and method == "yapo"
        and sae.cfg.hook_name != hook_name
    ):
        raise ValueError(
            f"The SAE was trained on {sae.cfg.hook_name}, not {hook_name}; a yapo code "
            "steers the SAE's own hook (drop --hook-name)."
        )
    layer = start_layer(hook_name)
    if layer > model.cfg.n_layers:
        raise ValueError(f"{hook_name} is beyond the model's {model.cfg.n_layers} layers.")
    torch.manual_seed(config.seed)
    device = config.device
    train = _cache_split(
        model,
        tokenize_pairs(tokenizer, train_pairs, bool(config.chat), config.max_length),
        layer,
        device,
    )
    val = (
        _cache_split(
            model,
            tokenize_pairs(tokenizer, val_pairs, bool(config.chat), config.max_length),
            layer,
            device,
        )
        if val_pairs
        else None
    )
    meta: dict[str, Any] = {
        "hyper_parameters": {k: v for k, v in vars(config).items() if k not in RUN_ONLY},
        "data_checksum": pairs_checksum(train_pairs),
        "n_train_pairs": len(train_pairs),
        "val_data_checksum": pairs_checksum(val_pairs) if val_pairs else None,
    }
    curves, dense = Curves(), None
    started = time.time()
    if method == "mean-diff":
        vector = mean_difference(train)
    else:
        vector, dense = _fit_preference(
            model, train, val, layer, config, sae, curves, meta, checkpoints
        )
    meta["train_seconds"] = round(time.time() - started, 2)
    model_name = model.cfg.model_name
    if method == "yapo":
        code: SteeringCode = LatentCode(
            sae.to(device),
            vector.cpu(),
            method="yapo",
            meta=meta,
            model_name=model_name,
            hook_name=hook_name,
        )
        code.meta["support_size"] = code.support_size
    else:
        code = DenseVector(vector.cpu(), hook_name, model_name, method, meta)
    code.meta.update(effect_size(code.to(device, train.resid.dtype), val or train))
    if val is not None:
        for alpha in (1.0, -1.0):
            placed = code.to(device, train.resid.dtype)
            key = "val_accuracy" if alpha > 0 else "val_accuracy_reversed"
            code.meta[key] = preference_accuracy(
                model, val, layer, lambda h, a=alpha, c=placed: c.apply(h, a)
            )
    code.meta["history"] = curves.epochs
    code.meta["loss_curve"] = curves.steps
    return TrainResult(code, curves.epochs, dense)


def _fit_preference(
    model,
    train: _CachedSplit,
    val: _CachedSplit | None,
    layer: int,
    config: TrainSteerConfig,
    sae,
    curves: Curves,
    meta: dict[str, Any],
    checkpoints: SteerCheckpoints | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """BiPO, or YaPO in `config.yapo_mode` (module docstring); returns the learned v (detached)
    and, when a dense phase was cut to k latents (refit, l1), v before the cut (on the CPU).

    Records the activation scale c, the support before the cut, or the mean-difference fit's cos²."""
    width = sae.cfg.d_sae if config.method == "yapo" else model.cfg.d_model
    v = torch.zeros(width, device=config.device, dtype=train.resid.dtype, requires_grad=True)
    scale = activation_scale(config.method, train, sae)
    meta["activation_scale"] = scale
    apply = _steering_fn(config.method, sae, v)
    mode = config.yapo_mode if config.method == "yapo" else "reference"
    k, fraction = config.top_k, config.anneal_fraction
    project = {
        "anneal": lambda u, t, total, _lr: keep_top_(u, annealed_cap(t, total, width, k, fraction)),
        "l1": lambda u, t, total, lr: soft_threshold_(u, lr * config.l1 * ramp(t, total, fraction)),
    }.get(mode)
    settings = {
        "lr": config.lr * scale,
        "warmup_fraction": config.warmup_fraction,
        "weight_decay": config.weight_decay,
        "grad_clip": config.grad_clip,
    }
    run = functools.partial(
        optimise,
        v,
        logprobs=lambda rows, d: _logprobs_above(model, train, rows, layer, lambda h: apply(h, d)),
        logp_ref=train.logp_ref,
        rows_of=train.tokens.rows,
        n_pairs=train.tokens.n_pairs,
        batch_pairs=config.batch_pairs,
        grad_accum=config.grad_accum,
        beta=config.beta,
        val_accuracy=(lambda: preference_accuracy(model, val, layer, lambda h: apply(h, 1.0)))
        if val is not None
        else None,
        curves=curves,
        progress=config.progress,
        checkpoints=checkpoints,
    )
    with frozen(model, sae):
        if mode == "refit" and config.support_by == "mean-diff":
            # no dense phase: start from the k-latent OMP fit of the mean difference
            fit = sparse_fit(mean_difference(train), sae.W_dec.detach(), k)
            meta["mean_diff_fit_cos2"] = fit.cos2
            mask = torch.zeros(width, dtype=torch.bool, device=v.device)
            mask[fit.support] = True
            with torch.no_grad():
                v[fit.support] = fit.coefficients.to(v.dtype)
            if config.lr > 0:  # lr 0: the untrained fit itself (no steps that cannot move it)
                run(Phase("yapo refit", config.epochs, mask=mask, **settings), seed=config.seed)
            return v.detach(), None
        first = "dense" if mode == "refit" else mode
        run(
            Phase(f"{config.method} {first}", config.epochs, project=project, **settings),
            seed=config.seed,
        )
        dense = v.detach().cpu().clone() if mode in ("refit", "l1") else None
        if dense is not None:
            meta["support_before_cut"] = int((dense != 0).sum())
        if mode == "l1":
            with torch.no_grad():
                keep_top_(v, k)
        if mode == "refit":
            h = train.resid[train.tokens.target_mask.to(train.resid.device) > 0]
            support = select_support(config.support_by, k, sae, h, v.detach())
            mask = torch.zeros(width, dtype=torch.bool, device=v.device)
            mask[support] = True
            with torch.no_grad():
                v.mul_(mask)
            refit = Phase("yapo refit", config.refit_epochs, mask=mask, **settings)
            run(refit, seed=config.seed + 1)
    return v.detach(), dense


@contextlib.contextmanager
def frozen(*modules):
    """Turn off requires_grad on the parameters of `modules` (None skipped); restore after."""
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
