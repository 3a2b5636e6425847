"""Model runs behind the audit's numbers (formulas in `saesteer.audit.metrics`).

What is audited is an `Intervention` (a steering code is its one-edit intervention, `as_intervention`):
edits at sites (`saesteer.steer.sites`) under one strength α. Nothing below its lowest site changes,
so for every text the unsteered residual entering the first edited block is computed once, and each
strength runs only the blocks from there up (a `Plan`):

    s    = min over edits of (l + 1 for a resid_post site at l, else l)   the first block edited
           (l for a feedback edit at resid_post l: it reads block l's input, so block l runs)
    h    = blocks[:s](embed(x))                          cached once, unsteered [T, d_model]
    h'   = below(h, α)       the edits at blocks.{s−1}.resid_post, then those at blocks.{s}.resid_pre,
                             applied to h directly (in list order, as their hooks would)
    run(h', t) = blocks[s:t](h') inside steer(model, upper, α)    upper = every other edit: TL's
                             block forward fires hook_resid_pre, the ln1/ln2 modules, hook_attn_out,
                             hook_mlp_out and hook_resid_post also when run with start_at_layer
    logits = unembed(run(h', None))

The steered layer H, where "what it did" is measured, is the residual stream just after the last
edit: blocks.m.hook_resid_post with m the largest edited layer, or blocks.m.hook_resid_pre when every
edit at layer m is at resid_pre. So a steering code is measured at its own hook, as before:

    h_H = run(h', m + 1)                  H = blocks.m.hook_resid_post
    h_H = pre_m(run(h', m), α)            H = blocks.m.hook_resid_pre  (m = s: h_H = h')
    h_L = run(h', L + 1)                  the later layer's resid_post, L ≥ the first block after H

A steering code has no upper edits: nothing is hooked, no block runs below H, and h_H = h' =
code.apply(h, α), exactly as `code.apply`. All of this equals running the whole model under
`steer(model, intervention, α, positions="all")`; the tests check it. Texts run one at a time (no
padding), except preference pairs and neutral prompts, which are right-padded (harmless in a causal
model: every real position sees only real tokens).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from saesteer.audit.metrics import token_logprobs
from saesteer.hook_names import resid_post
from saesteer.steer.batching import TokenizedPairs, completion_logprobs
from saesteer.steer.codes import SteeringCode
from saesteer.steer.hooks import steer
from saesteer.steer.intervention import Edit, Intervention, as_intervention

PAIR_CHUNK = 16


def start_block(intervention: Intervention) -> int:
    """s = min over edits of (l + 1 for a resid_post site at l, else l): the first block edited.
    An edit that reads its block's input (feedback) counts as l: that block must run."""
    return min(
        edit.site.layer + 1
        if edit.site.stream == "resid_post" and edit.operator.observes is None
        else edit.site.layer
        for edit in intervention.edits
    )


def steered_hook(intervention: Intervention) -> str:
    """H: the residual hook just after the last edit (module docstring)."""
    last = max(site.layer for site in intervention.sites)
    streams = {site.stream for site in intervention.sites if site.layer == last}
    return f"blocks.{last}.hook_resid_pre" if streams == {"resid_pre"} else resid_post(last)


@dataclass(frozen=True)
class Plan:
    """How an intervention runs from the residual h cached below it (module docstring)."""

    start: int  # s
    bottom: tuple[Edit, ...]  # applied to h by hand: resid_post of s − 1, then resid_pre of s
    upper: Intervention | None  # every other edit, fired by its hook inside `steer`
    hook: str  # H, the steered layer's residual hook
    hook_stop: int  # the block H's residual enters (m + 1 for resid_post m, m for resid_pre m)
    hook_edits: tuple[Edit, ...]  # resid_pre edits at H applied by hand after run(h', m) (m > s)

    @property
    def at_cache(self) -> bool:
        """True when H is the cached residual itself (every steering code): h_H = below(h, α)."""
        return self.hook_stop == self.start


def make_plan(code: SteeringCode | Intervention, model: Any) -> Plan:
    """The `Plan` of a code or intervention on `model` (its edits placed on the model's device and
    dtype once, so no run moves them)."""
    intervention = as_intervention(code).to(model.cfg.device, model.cfg.dtype)
    start = start_block(intervention)
    hook = steered_hook(intervention)
    edits = intervention.edits

    def at(layer: int, stream: str) -> tuple[Edit, ...]:
        return tuple(e for e in edits if (e.site.layer, e.site.stream) == (layer, stream))

    bottom = at(start - 1, "resid_post") + at(start, "resid_pre")
    others = [e for e in edits if all(e is not b for b in bottom)]
    upper = (
        Intervention(others, intervention.method, intervention.model_name, intervention.meta)
        if others
        else None
    )
    layer = max(site.layer for site in intervention.sites)
    pre = hook.endswith("hook_resid_pre")
    hook_stop = layer if pre else layer + 1
    hook_edits = at(layer, "resid_pre") if pre and layer > start else ()
    return Plan(start, bottom, upper, hook, hook_stop, hook_edits)


def _apply(edits: Sequence[Edit], h: torch.Tensor, alpha: float) -> torch.Tensor:
    for edit in edits:
        h = edit.apply(h, alpha)
    return h


def below(plan: Plan, h: torch.Tensor, alpha: float) -> torch.Tensor:
    """h' = the bottom edits applied to the cached residual h [..., d] (α = 0: h itself)."""
    return _apply(plan.bottom, h, alpha)


@dataclass
class Residuals:
    """Token ids [T] of texts and their unsteered residual entering block s [T, d_model]."""

    ids: list[torch.Tensor]
    resid: list[torch.Tensor]


@torch.no_grad()
def residuals(model: Any, ids: Sequence[torch.Tensor], start: int) -> Residuals:
    """h = blocks[:start](embed(ids)) for each 1-D id tensor."""
    device = model.cfg.device
    resid = [model(x[None].to(device), stop_at_layer=start)[0] for x in ids]
    return Residuals(list(ids), resid)


def right_padded(ids: Sequence[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N, T], mask [N, T]) of 1-D id tensors, right-padded with `pad` (mask 1 = real token)."""
    width = max(x.numel() for x in ids)
    batch = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros(len(ids), width)
    for row, x in enumerate(ids):
        batch[row, : x.numel()] = x
        mask[row, : x.numel()] = 1.0
    return batch, mask


@torch.no_grad()
def run_above(model: Any, h: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
    """blocks[start:stop](h) for h [T, d] or [N, T, d] (stop None: through the unembedding → logits)."""
    if stop is not None and stop <= start:
        return h
    if h.ndim == 2:
        return model(h[None], start_at_layer=start, stop_at_layer=stop)[0]
    return model(h, start_at_layer=start, stop_at_layer=stop)


@torch.no_grad()
def forward(
    model: Any, plan: Plan, h: torch.Tensor, alpha: float, stop: int | None = None
) -> torch.Tensor:
    """run(below(h, α), stop): the steered blocks[s:stop] from the cached h [T, d] or [N, T, d]
    (stop None: the logits; α = 0: the unsteered run, nothing hooked)."""
    if alpha == 0:
        return run_above(model, h, plan.start, stop)
    h = below(plan, h, alpha)
    hooked = plan.upper is not None and (stop is None or stop > plan.start)
    context = steer(model, plan.upper, alpha) if hooked else contextlib.nullcontext()
    with context:
        return run_above(model, h, plan.start, stop)


@torch.no_grad()
def at_hook(model: Any, plan: Plan, h: torch.Tensor, alpha: float) -> torch.Tensor:
    """h_H: the residual at the steered hook H from the cached h [T, d] (module docstring)."""
    return _apply(plan.hook_edits, forward(model, plan, h, alpha, plan.hook_stop), alpha)


@torch.no_grad()
def hook_states(
    model: Any, plan: Plan, resid: Sequence[torch.Tensor], alpha: float
) -> torch.Tensor:
    """h_H of every token of every text [Σ T, d] (a code: below(h, α) on all tokens at once)."""
    if plan.at_cache:
        return below(plan, torch.cat(list(resid)), alpha)
    return torch.cat([at_hook(model, plan, h, alpha) for h in resid])


@torch.no_grad()
def generation_logprobs(
    model: Any, prompts: Sequence[torch.Tensor], generations: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """log p_0(g_t | prompt, g_<t) [len(g)] of each generation under the unsteered model."""
    out = []
    for prompt, gen in zip(prompts, generations, strict=True):
        if gen.numel() == 0:
            out.append(torch.zeros(0, dtype=torch.float64))
            continue
        full = torch.cat([prompt, gen]).to(model.cfg.device)
        logits = model(full[None])[0]
        out.append(token_logprobs(logits, full)[prompt.numel() - 1 :].cpu())
    return out


@dataclass
class PairResiduals:
    """Tokenized validation pairs, their residual entering block s [rows, T, d] and log π_0 [rows]."""

    tokens: TokenizedPairs
    resid: torch.Tensor
    logp_ref: torch.Tensor


@torch.no_grad()
def pair_residuals(model: Any, tokens: TokenizedPairs, start: int) -> PairResiduals:
    """Cache h entering block s for every pair row, and the unsteered completion log-probs."""
    device = model.cfg.device
    resid, logp = [], []
    for lo in range(0, tokens.input_ids.shape[0], PAIR_CHUNK):
        ids = tokens.input_ids[lo : lo + PAIR_CHUNK].to(device)
        h = model(ids, stop_at_layer=start)
        logits = model(h, start_at_layer=start)
        resid.append(h)
        logp.append(
            completion_logprobs(logits, ids, tokens.target_mask[lo : lo + PAIR_CHUNK].to(device))
        )
    return PairResiduals(tokens, torch.cat(resid), torch.cat(logp).cpu())


@torch.no_grad()
def pair_logprobs(model: Any, pairs: PairResiduals, plan: Plan, alpha: float) -> torch.Tensor:
    """log π_α(y | x) per row [rows]: the logits of `forward(plan, h, α)` from the cached h."""
    out = []
    for lo in range(0, pairs.resid.shape[0], PAIR_CHUNK):
        h = pairs.resid[lo : lo + PAIR_CHUNK]
        ids = pairs.tokens.input_ids[lo : lo + PAIR_CHUNK].to(h.device)
        mask = pairs.tokens.target_mask[lo : lo + PAIR_CHUNK].to(h.device)
        out.append(completion_logprobs(forward(model, plan, h, alpha), ids, mask))
    return torch.cat(out).cpu()
