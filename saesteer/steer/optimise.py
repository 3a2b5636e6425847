"""The preference-optimisation loop shared by BiPO and every YaPO mode, and its step rules.

One optimizer step t of T on the code v (objective in `saesteer.steer.train`):

    g      = ∇_v loss                                  (masked to the support, where one is frozen)
    g      ← g · min(1, clip / ‖g‖)                     gradient clipping (clip 0: off)
    v      ← AdamW(v, g, lr · c · f(t), weight decay)   c: the activation scale (`train`)
    v      ← project_t(v)                               mode's rule, after the step (below)

Learning-rate factor, warm-up W = ⌈w · T⌉ steps then cosine decay to 0:

    f(t) = (t + 1) / W                              t < W
           ½ · (1 + cos(π · (t − W) / (T − W)))      t ≥ W

Projections (each applied after the AdamW step, in place):

    soft_threshold  v_i ← sign(v_i) · max(|v_i| − τ, 0)             the proximal step of τ‖v‖₁
    keep_top        v_i ← v_i · 1[|v_i| among the k largest]         the cap: ‖v‖₀ ≤ k
    annealed cap    k_t = round(n^(1 − s) · k^s), s = min(1, t / (a · T))
                    a geometric path from n = len(v) latents to k over the first a · T steps
    L1 ramp         τ_t = c · lr · f(t) · λ · min(1, t / (a · T))
                    the L1 weight grows from 0, so early steps are free to find the direction
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from saesteer.steer.batching import preference_margins
from saesteer.steer.checkpoint import SteerCheckpoints, optimizer_state, restore_optimizer


def lr_factor(step: int, total: int, warmup: int) -> float:
    """f(t) of the module docstring (warm-up steps `warmup` of `total`)."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))


def soft_threshold_(v: torch.Tensor, tau: float) -> None:
    """In place: v ← sign(v) · max(|v| − τ, 0)."""
    v.copy_(torch.sign(v) * torch.clamp(v.abs() - tau, min=0))


def keep_top_(v: torch.Tensor, k: int) -> None:
    """In place: zero all but the k largest |v_i| (nothing to do when ‖v‖₀ ≤ k)."""
    if int((v != 0).sum()) > k:
        drop = torch.ones_like(v, dtype=torch.bool)
        drop[v.abs().topk(k).indices] = False
        v.masked_fill_(drop, 0.0)


def annealed_cap(step: int, total: int, n: int, k: int, fraction: float) -> int:
    """k_t of the module docstring: n at step 0, geometric to k at step fraction·total, then k."""
    s = min(1.0, step / max(fraction * total, 1e-12))
    return max(k, round(math.exp((1 - s) * math.log(n) + s * math.log(k))))


def ramp(step: int, total: int, fraction: float) -> float:
    """min(1, t / (a · T)): 0 at the first step, 1 from step a·T on."""
    return min(1.0, step / max(fraction * total, 1e-12))


@dataclass
class Phase:
    """One optimisation run over the training pairs (a mode may chain several)."""

    name: str
    epochs: int
    lr: float  # already in activation units (lr · c)
    warmup_fraction: float
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    mask: torch.Tensor | None = None  # [width] bool: coordinates allowed to move (None: all)
    project: Callable[[torch.Tensor, int, int, float], None] | None = None
    """project(v, step, total_steps, current_lr) → None, in place, after each AdamW step."""


@dataclass
class Curves:
    """What happened while optimising: one row per epoch and the loss of every step."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    steps: list[dict[str, float]] = field(default_factory=list)


def optimise(
    v: torch.Tensor,
    phase: Phase,
    *,
    logprobs: Callable[[torch.Tensor, float], torch.Tensor],
    logp_ref: torch.Tensor,
    rows_of: Callable[[torch.Tensor], torch.Tensor],
    n_pairs: int,
    batch_pairs: int,
    grad_accum: int,
    beta: float,
    seed: int,
    val_accuracy: Callable[[], float] | None,
    curves: Curves,
    progress: bool,
    checkpoints: SteerCheckpoints | None = None,
) -> None:
    """Run `phase` on the leaf tensor v (requires_grad) in place (module docstring).

    logprobs(rows, d) → log π_{d·v}(y | x) [len(rows)] (differentiable in v); logp_ref [rows]: π_0;
    rows_of(pair indices) → the rows of their chosen and rejected completions.
    checkpoints: save the whole state after every epoch, and continue from it when one exists
    (`saesteer.steer.checkpoint`).
    """
    optimizer = torch.optim.AdamW([v], lr=phase.lr, weight_decay=phase.weight_decay)
    micro_per_epoch = math.ceil(n_pairs / batch_pairs)
    total = math.ceil(micro_per_epoch / grad_accum) * phase.epochs
    warmup = math.ceil(phase.warmup_fraction * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: lr_factor(t, total, warmup))
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(total=total, desc=f"train-steer {phase.name}", disable=not progress)
    started, step, val_acc, done = time.time(), 0, float("nan"), 0
    first_step = curves.steps[-1]["step"] if curves.steps else 0
    earlier_seconds = curves.epochs[-1]["seconds"] if curves.epochs else 0.0
    index = checkpoints.next_phase() if checkpoints is not None else None
    saved = checkpoints.load(index) if checkpoints is not None else None
    if saved is not None:
        meta, tensors = saved
        with torch.no_grad():
            v.copy_(tensors["v"].to(v.device, v.dtype))
        restore_optimizer(optimizer, meta["optimizer"], tensors)
        schedule.load_state_dict(meta["schedule"])
        generator.set_state(tensors["generator"])
        curves.steps[:], curves.epochs[:] = meta["curves_steps"], meta["curves_epochs"]
        step, done, first_step = meta["step"], meta["epochs_done"], meta["first_step"]
        earlier_seconds, val_acc = meta["earlier_seconds"], meta["val_accuracy"]
        bar.update(step)
    try:
        for epoch in range(done, phase.epochs):
            order = torch.randperm(n_pairs, generator=generator)
            losses: list[float] = []
            for micro in range(micro_per_epoch):
                pairs = order[micro * batch_pairs : (micro + 1) * batch_pairs]
                direction = 1.0 if torch.rand((), generator=generator) < 0.5 else -1.0
                rows = rows_of(pairs)
                margins = preference_margins(logprobs(rows, direction), logp_ref[rows])
                loss = -F.logsigmoid(direction * beta * margins).mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"Non-finite loss in phase {phase.name}, epoch {epoch}, step {step}: "
                        "lower --lr or --beta."
                    )
                (loss / grad_accum).backward()
                losses.append(loss.item())
                if (micro + 1) % grad_accum and micro != micro_per_epoch - 1:
                    continue
                _step(v, optimizer, phase, step, total)
                schedule.step()
                step += 1
                curves.steps.append(
                    {"step": first_step + step, "phase": phase.name, "loss": losses[-1]}
                )
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", support=int((v != 0).sum()))
            if val_accuracy is not None:
                val_acc = val_accuracy()
            curves.epochs.append(
                {
                    "phase": phase.name,
                    "epoch": len(curves.epochs) + 1,
                    "loss": sum(losses) / len(losses),
                    "val_accuracy": val_acc,
                    "support": int((v != 0).sum()),
                    "seconds": round(earlier_seconds + time.time() - started, 2),
                }
            )
            bar.set_postfix(loss=f"{curves.epochs[-1]['loss']:.4f}", val_acc=f"{val_acc:.2f}")
            if checkpoints is not None:
                opt_meta, opt_tensors = optimizer_state(optimizer)
                state = {
                    "phase": phase.name,
                    "epochs_done": epoch + 1,
                    "step": step,
                    "first_step": first_step,
                    "earlier_seconds": earlier_seconds,
                    "val_accuracy": val_acc,
                    "optimizer": opt_meta,
                    "schedule": schedule.state_dict(),
                    "curves_steps": curves.steps,
                    "curves_epochs": curves.epochs,
                }
                tensors = {"v": v, "generator": generator.get_state(), **opt_tensors}
                checkpoints.save(index, state, tensors)
    finally:
        bar.close()


def _step(v: torch.Tensor, optimizer, phase: Phase, step: int, total: int) -> None:
    """Mask and clip the gradient, take the AdamW step, then the phase's projection."""
    if phase.mask is not None:
        v.grad.mul_(phase.mask)
    if phase.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([v], phase.grad_clip)
    current_lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        if phase.mask is not None:
            v.mul_(phase.mask)
        if phase.project is not None:
            phase.project(v, step, total, current_lr)
