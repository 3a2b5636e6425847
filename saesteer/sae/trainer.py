"""The SAE training loop: Adam with warm-up and linear decay, dead-latent tracking, NaN/Inf guard,
atomic resumable checkpoints and data parallelism (torchrun → DistributedDataParallel).

Learning rate at step t of T (warm-up W, decay over the last fraction f):
    lr_t = lr · min(1, (t + 1)/W, (T − t)/(f·T))
    W    = min(warmup_steps, ⌊WARMUP_CAP · T⌋)      a short run is never all warm-up
A run of fewer than MIN_STEPS steps warns: it under-trains whatever its tokens (measured on the
default model, 200k tokens: 48 steps of batch 4096 reach explained variance 0.38, 195 of 1024 0.80).
Each step: x ← s·x (input scale), loss = L_mse + L_sparse (+ L_aux) (see `training.py`), backward,
remove the radial part of ∂L/∂W_dec (unit-norm archs), Adam step, renormalise W_dec rows.
With `torchrun --nproc_per_node=N`, rank r reads rows [r·B/N, (r+1)·B/N) of every global batch B;
DDP averages gradients, so the run equals one process with batch B up to float summation order.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from saesteer.config import config_to_dict
from saesteer.distributed import Dist, setup_distributed
from saesteer.outputs import Output
from saesteer.sae.checkpoint import (
    checkpoint_files,
    load_latest_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from saesteer.sae.configs import MIN_STEPS, WARMUP_CAP, TrainSAEConfig
from saesteer.sae.data import ActivationSource, build_source, check_finite
from saesteer.sae.init import init_b_dec, input_scale
from saesteer.sae.io import META_FILE, save_sae
from saesteer.sae.model import SAE, SAEConfig
from saesteer.sae.training import TrainingSAE


def effective_warmup(warmup_steps: int, total_steps: int) -> int:
    """W of the module docstring."""
    return min(warmup_steps, int(WARMUP_CAP * total_steps))


def schedule_warnings(cfg: TrainSAEConfig, total_steps: int) -> list[str]:
    """What is wrong with this run's schedule, each with the fix (empty when nothing is)."""
    notes = []
    if total_steps < MIN_STEPS:
        notes.append(
            f"Only {total_steps} optimizer steps (--tokens {cfg.tokens} // --batch-size "
            f"{cfg.batch_size}): SAEs under-train below ~{MIN_STEPS}; lower --batch-size "
            f"(e.g. {max(64, cfg.tokens // (4 * MIN_STEPS) // 64 * 64)}) or raise --tokens."
        )
    warmup = effective_warmup(cfg.warmup_steps, total_steps)
    if warmup < cfg.warmup_steps:
        notes.append(
            f"--warmup-steps {cfg.warmup_steps} is more than {WARMUP_CAP:.0%} of the "
            f"{total_steps} steps; warming up over {warmup} instead."
        )
    return notes


class NonFiniteError(RuntimeError):
    """Training produced a NaN/Inf loss or weight; the last checkpoint on disk is untouched."""

    def __init__(self, step: int, what: str, parts: dict[str, float]) -> None:
        self.step, self.what, self.parts = step, what, parts
        shown = ", ".join(f"{k}={v:.6g}" for k, v in parts.items())
        super().__init__(
            f"Non-finite {what} at step {step} ({shown}). Training stopped; the last "
            "checkpoint is intact: lower --lr, check the data, then --resume."
        )


@dataclass
class TrainResult:
    """A finished run: the folded SAE, its folder and the final training metrics."""

    sae: SAE
    path: Path
    metrics: dict[str, float]


def lr_factor(step: int, total: int, warmup: int, decay_fraction: float) -> float:
    """min(1, (t + 1)/W, (T − t)/(f·T)) (see module docstring)."""
    warm = (step + 1) / warmup if warmup > 0 else 1.0
    decay_steps = decay_fraction * total
    decay = (total - step) / decay_steps if decay_steps > 0 else 1.0
    return max(0.0, min(1.0, warm, decay))


def _gather_rows(local: torch.Tensor, ctx: Dist) -> torch.Tensor:
    """Concatenate every rank's rows in rank order (identity on one process)."""
    if ctx.world == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(ctx.world)]
    dist.all_gather(parts, local)
    return torch.cat(parts)


def _init_sample(source: ActivationSource, cfg: TrainSAEConfig, ctx: Dist) -> torch.Tensor:
    """The global init sample [≥ init_tokens, d_in] from a stream separate from training's."""
    stream = source.batches(cfg.batch_size, cfg.seed + 1, 0, ctx.rank, ctx.world)
    n_batches = max(1, math.ceil(cfg.init_tokens / cfg.batch_size))
    local = torch.cat([next(stream) for _ in range(n_batches)])
    check_finite(local, "the initialisation sample")
    return _gather_rows(local.to(ctx.device), ctx)


def _explained_variance(x: torch.Tensor, recon: torch.Tensor) -> float:
    """1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over the batch."""
    residual = (x - recon).pow(2).sum()
    total = (x - x.mean(dim=0)).pow(2).sum().clamp(min=1e-12)
    return float(1 - residual / total)


def train_sae(
    cfg: TrainSAEConfig,
    source: ActivationSource | None = None,
    step_callback: Callable[[int, TrainingSAE], None] | None = None,
) -> TrainResult:
    """Train an SAE as `cfg` says; returns the saved (input-scale-folded) SAE.

    source: overrides the data options of `cfg` (any object following `data.ActivationSource`).
    step_callback(step, module): called after every optimizer step (for logging or tests).
    """
    ctx = setup_distributed(cfg.device)
    output = Output(cfg.out, "sae") if ctx.main else None  # a foreign --out fails before any work
    with output if output is not None else contextlib.nullcontext():
        return _train(cfg, source, step_callback, ctx, output)


def _train(cfg: TrainSAEConfig, source, step_callback, ctx: Dist, output) -> TrainResult:
    """The body of `train_sae`; `output` (main process only) is created once the data opened."""
    source = source or build_source(cfg)
    out = output.in_place() if output is not None else Path(cfg.out)
    if not cfg.resume and (checkpoint_files(out) or (out / META_FILE).exists()):
        raise ValueError(
            f"{out} already holds a run; pass --resume to continue it or pick another --out."
        )
    total_steps = cfg.tokens // cfg.batch_size
    if total_steps < 1:
        raise ValueError(f"--tokens {cfg.tokens} is less than one batch of {cfg.batch_size}.")
    for note in schedule_warnings(cfg, total_steps) if ctx.main else ():
        warnings.warn(note, UserWarning, stacklevel=3)
    warmup = effective_warmup(cfg.warmup_steps, total_steps)
    torch.manual_seed(cfg.seed)
    sae_cfg = SAEConfig(
        d_in=source.d_in,
        d_sae=cfg.width(source.d_in),
        arch=cfg.arch,
        k=cfg.k if cfg.arch in ("topk", "batchtopk") else None,
        model_name=cfg.model or getattr(source, "model_name", ""),
        hook_name=cfg.hook or getattr(source, "hook", ""),
    )
    module = TrainingSAE(SAE(sae_cfg), cfg.loss_settings()).to(ctx.device)
    optimizer = torch.optim.Adam(module.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: lr_factor(t, total_steps, warmup, cfg.decay_fraction)
    )
    since_fired = torch.zeros(sae_cfg.d_sae, dtype=torch.long, device=ctx.device)
    step, scale = 0, 1.0
    sample = _init_sample(source, cfg, ctx)
    if cfg.resume:
        state = load_latest_checkpoint(out)
        _check_resumable(state, cfg, sae_cfg)
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, scale = state["step"], state["trainer"]["scale"]
        since_fired.copy_(state["trainer"]["since_fired"])
        set_rng_state(state["rng"])
    else:
        scale = input_scale(sample) if cfg.normalize else 1.0
        init_b_dec(module.sae.b_dec, sample * scale, cfg.b_dec_init)
    model: torch.nn.Module = module
    if ctx.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(module)

    def checkpoint() -> None:
        if ctx.main:
            save_checkpoint(
                out,
                step,
                {
                    "module": module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "config": config_to_dict(cfg),
                    "sae_cfg": dataclasses.asdict(sae_cfg),
                    "trainer": {"scale": scale, "since_fired": since_fired.cpu()},
                },
                keep=cfg.keep_checkpoints,
            )
        if ctx.world > 1:
            dist.barrier()

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not (cfg.progress and ctx.main),
        desc=f"train {cfg.arch} SAE",
        unit="step",
    )
    metrics: dict[str, float] = {}
    stream = source.batches(cfg.batch_size, cfg.seed, step, ctx.rank, ctx.world)
    module.train()
    while step < total_steps:
        x = next(stream).to(ctx.device)
        check_finite(x, f"training batch {step}")
        x = x * scale
        out_step = model(x, since_fired >= cfg.dead_tokens)
        parts = {k: float(v) for k, v in out_step.parts.items()}
        if not torch.isfinite(out_step.loss):
            raise NonFiniteError(step, "loss", parts)
        optimizer.zero_grad(set_to_none=True)
        out_step.loss.backward()
        module.project_decoder_grad()
        optimizer.step()
        scheduler.step()
        module.after_step()
        if not all(torch.isfinite(p).all() for p in module.parameters()):
            raise NonFiniteError(step, "weight after the update", parts)
        fired = out_step.fired.to(torch.int32)
        if ctx.world > 1:
            dist.all_reduce(fired, op=dist.ReduceOp.MAX)
        since_fired += cfg.batch_size
        since_fired[fired.bool()] = 0
        step += 1
        if step_callback is not None:
            step_callback(step, module)
        if step % cfg.log_every == 0 or step == total_steps:
            metrics = {
                "loss": float(out_step.loss.detach()),
                **parts,
                "l0": float(out_step.l0),
                "explained_variance": _explained_variance(x, out_step.recon),
                "dead_fraction": float((since_fired >= cfg.dead_tokens).float().mean()),
            }
            bar.set_postfix(
                loss=f"{metrics['loss']:.4g}",
                l0=f"{metrics['l0']:.1f}",
                ev=f"{metrics['explained_variance']:.3f}",
                dead=f"{metrics['dead_fraction']:.3f}",
            )
        bar.update(1)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
            checkpoint()
    bar.close()
    checkpoint()
    return _finish(module, scale, sample, cfg, sae_cfg, source, metrics, step, out, ctx)


def _check_resumable(state: dict[str, Any], cfg: TrainSAEConfig, sae_cfg: SAEConfig) -> None:
    needed = ("sae_cfg", "config", "module", "optimizer", "scheduler", "step", "trainer", "rng")
    missing = [k for k in needed if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(
            f"Cannot resume from {cfg.out}: its newest checkpoint lacks {', '.join(missing)} (not "
            "a saesteer train-sae checkpoint, or damaged); delete checkpoints/ to start over."
        )
    saved = state["sae_cfg"]
    for name in ("d_in", "d_sae", "arch", "k"):
        if saved[name] != getattr(sae_cfg, name):
            raise ValueError(
                f"Cannot resume: the checkpoint has {name}={saved[name]}, this run "
                f"{getattr(sae_cfg, name)} (d_in comes from the data). Use the original options."
            )
    for name in ("batch_size", "seed", "tokens", "skip_positions"):
        if state["config"].get(name, 0) != getattr(cfg, name):
            raise ValueError(
                f"Cannot resume: --{name.replace('_', '-')} was {state['config'][name]}, "
                f"now {getattr(cfg, name)}; resume needs the same value."
            )


@torch.no_grad()
def _finish(
    module: TrainingSAE,
    scale: float,
    sample: torch.Tensor,
    cfg: TrainSAEConfig,
    sae_cfg: SAEConfig,
    source: ActivationSource,
    metrics: dict[str, float],
    step: int,
    out: Path,
    ctx: Dist,
) -> TrainResult:
    """Fold the input scale (and relu's decoder norms) into a copy of the SAE, save it."""
    sae = copy.deepcopy(module.sae).cpu().eval()
    if cfg.arch == "relu":
        sae.fold_decoder_norms()
    sae.fold_input_scale(scale)
    z = sae.encode(sample.cpu())
    density = (z > 0).float().mean(dim=0)
    if ctx.main:
        save_sae(
            sae,
            out,
            log10_density=torch.log10(density + 1e-10),
            metadata={
                "training": {
                    "config": config_to_dict(cfg),
                    "steps": step,
                    "tokens": step * cfg.batch_size,
                    "world_size": ctx.world,
                    "input_scale_folded": scale,
                    "final_metrics": metrics,
                },
                "seed": cfg.seed,
                "inputs": source.describe(),
            },
        )
    if ctx.world > 1:
        dist.barrier()
    return TrainResult(sae, out, metrics)
