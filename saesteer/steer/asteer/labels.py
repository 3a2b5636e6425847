"""Rollout labels of (code, prompt, α): under-steered, success, or over-steered (broken text).

A rollout g is the greedy steered generation of up to N new tokens (stopping at EOS), scored by the
*unsteered* model p_0 and by the behaviour's scorer:

    ppl(g)    exp(−Σ_t log p_0(g_t | x, g_<t) / |g|)       (an empty g has no perplexity: not over)
    rep(g)    1 − distinct 3-grams / 3-grams of g's ids   (`saesteer.audit.metrics.ngram_repetition`)
    ref       the pooled perplexity of the prompts' unsteered rollouts, exp(Σ nll / Σ |g|), the
              benchmark's α = 0 reference (`saesteer bench-steer --budget`)

    label =  over      if ppl(g) > budget · ref  or  rep(g) > max_repetition   (incoherent)
             success   elif the behaviour's scorer accepts g (`Behaviour.succeeded`)
             under     otherwise

Defaults: budget 2 (as bench-steer's coherence budget), max_repetition 0.5 (half the 3-grams of a
rollout repeat: a degenerate loop; the unsteered default model's greedy 40-token replies sit well
below it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

CLASSES = ("under", "success", "over")
UNDER, SUCCESS, OVER = range(3)


@dataclass(frozen=True)
class LabelRule:
    """The coherence thresholds of the label (module docstring)."""

    budget: float = 2.0
    max_repetition: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.budget) and self.budget > 1):
            raise ValueError(f"budget must be a finite number > 1, got {self.budget!r}.")
        if not 0 <= self.max_repetition <= 1:
            raise ValueError(f"max_repetition must be in [0, 1], got {self.max_repetition!r}.")


def label_of(
    succeeded: bool, ppl: float, reference_ppl: float, repetition: float, rule: LabelRule
) -> str:
    """'over', 'success' or 'under' for one rollout (module docstring)."""
    over_ppl = math.isfinite(ppl) and ppl > rule.budget * reference_ppl
    if over_ppl or repetition > rule.max_repetition:
        return "over"
    return "success" if succeeded else "under"


def pooled_ppl(rollouts: Sequence[dict[str, Any]]) -> float:
    """exp(Σ nll / Σ tokens) of rollouts (1.0 when none has a token)."""
    tokens = sum(r["tokens"] for r in rollouts)
    return math.exp(sum(r["nll"] for r in rollouts) / tokens) if tokens else 1.0


def rollout(
    model: Any,
    tokenizer: Any,
    code: Any,
    alpha: float,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int,
    scorer_model: Any = None,
) -> list[dict[str, Any]]:
    """Greedy generations of left-padded prompts at (code, α), each as {ids, text, tokens, nll,
    ppl, repetition}; nll under the unsteered `scorer_model` (default `model`). No code or α = 0:
    the unsteered rollout."""
    from saesteer.audit.metrics import ngram_repetition
    from saesteer.bench.forward import continuation_logprobs, sequence_outputs
    from saesteer.steer.generate import generate_ids_steered

    eos = tokenizer.eos_token_id
    steering = code if code is not None and alpha != 0 else None
    new = generate_ids_steered(
        model,
        prompt_ids,
        prompt_mask,
        steering,
        alpha,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
    )
    generated = [row[: _length(row, eos)] for row in new]
    prompts = [row[m.bool()] for row, m in zip(prompt_ids, prompt_mask, strict=True)]
    rows = [torch.cat([p, g]) for p, g in zip(prompts, generated, strict=True)]
    outputs = sequence_outputs(scorer_model if scorer_model is not None else model, rows)
    out = []
    for (logits, _), prompt, gen, row in zip(outputs, prompts, generated, rows, strict=True):
        n = int(gen.numel())
        nll = -continuation_logprobs(logits, row, prompt.numel()).sum().item() if n else 0.0
        ids = gen.tolist()
        out.append(
            {
                "ids": ids,
                "text": tokenizer.decode(gen, skip_special_tokens=True).strip(),
                "tokens": n,
                "nll": nll,
                "ppl": math.exp(nll / n) if n else float("nan"),
                "repetition": ngram_repetition(ids, 3),
            }
        )
    return out


def _length(row: torch.Tensor, eos: int | None) -> int:
    """Tokens before the first EOS."""
    if eos is None:
        return row.numel()
    hits = (row == eos).nonzero()
    return int(hits[0, 0]) if hits.numel() else row.numel()


class Judge:
    """Labels rollouts of one behaviour's prompts: `judge(α, indices, rollouts) → labels`.

    `reference_ppl`: the unsteered pooled perplexity (`pooled_ppl` of the α = 0 rollouts);
    `succeeded`: the behaviour's scorer (text → bool). α is passed for judges that want it."""

    def __init__(
        self, succeeded: Callable[[str], bool], reference_ppl: float, rule: LabelRule | None = None
    ) -> None:
        self.succeeded, self.reference_ppl = succeeded, float(reference_ppl)
        self.rule = rule or LabelRule()

    def __call__(
        self, alpha: float, indices: Sequence[int], rollouts: Sequence[dict[str, Any]]
    ) -> list[str]:
        return [
            label_of(
                self.succeeded(r["text"]), r["ppl"], self.reference_ppl, r["repetition"], self.rule
            )
            for r in rollouts
        ]


def behaviour_judge(
    model: Any,
    tokenizer: Any,
    name: str,
    prompts: Sequence[str],
    max_new_tokens: int,
    rule: LabelRule | None = None,
) -> tuple[Judge, list[dict[str, Any]]]:
    """(Judge of shipped behaviour `name`, the prompts' unsteered rollouts that set its reference)."""
    from saesteer.steer.behaviours import behaviour
    from saesteer.steer.generate import batch_prompt_ids

    chosen = behaviour(name)
    ids, mask = batch_prompt_ids(tokenizer, prompts, chat=chosen.chat)
    base = rollout(model, tokenizer, None, 0.0, ids, mask, max_new_tokens)
    return Judge(chosen.succeeded, pooled_ppl(base), rule), base
