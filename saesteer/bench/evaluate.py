"""One benchmark cell: steer greedy generations from held-out prompts at (code, α), then score them.

For generations g_i of prompts x_i (i = 1..N), with p_0 the unsteered model:

    success_i     1 if the behaviour's scorer accepts g_i (`Behaviour.succeeded`), else 0
    score_i       the scorer's value of g_i
    embed_i       cos(e_i, c_w) − cos(e_i, c_l): e_i the mean hidden state of g_i's tokens at block
                  `embed_layer` of p_0 reading (x_i, g_i); c_w, c_l the means of the same over the
                  train pairs' chosen and rejected completions (the default model itself is the
                  sentence encoder: no offline sentence-embedding package ships weights)
    nll_i         −Σ_t log p_0(g_i,t | x_i, g_i,<t);   ppl = exp(Σ_i nll_i / Σ_i |g_i|)
    kl            mean_t KL(p_0 ‖ p_α) of next tokens over the positions of neutral prompts
    distinct_2, compression, repetition (rep_3), attributes, side effects: `saesteer.bench.metrics`

Generation is batched over the prompts (left-padded, KV cache); scoring runs the unsteered model on
(x_i, g_i) in chunks. Seconds spent generating and scoring are recorded per cell.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from saesteer.audit.metrics import mean_ngram_repetition, next_token_kl
from saesteer.bench import metrics
from saesteer.bench.forward import continuation_logprobs, sequence_outputs
from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered
from saesteer.steer.hooks import steer
from saesteer.steer.io import model_facts

HELD_OUT_CHAT = (
    "What should I do this evening?",
    "Tell me about your day.",
    "Can you describe a place you like?",
    "What is a good way to spend a Sunday?",
    "Write a short note to a friend.",
    "What do you think about mornings?",
    "Describe the view from a window.",
    "What would you pack for a short trip?",
    "How do you relax after work?",
    "Tell me something about your neighbourhood.",
    "What is your favourite season and why?",
    "Describe a memorable afternoon.",
    "What are your plans for the holidays?",
    "Give me an idea for a weekend project.",
    "What did you learn this week?",
    "Describe your ideal home.",
    "How would you welcome a new colleague?",
    "What makes a good day?",
    "Tell me about a hobby.",
    "What would you say to someone who feels bored?",
)
HELD_OUT_STORY = (
    "The meeting had barely started when",
    "After the long drive home, she",
    "The old house at the end of the street",
    "When the letter finally arrived, he",
    "The last day of the summer camp",
    "As the train pulled into the station, we",
    "My first week at the new job",
    "The neighbours were talking about the",
)


def held_out_prompts(name: str, n: int = 0) -> list[str]:
    """A behaviour's validation prompts, then the shared held-out list (in no shipped split);
    the first n (0: all)."""
    from saesteer.steer.behaviours import behaviour, training_data

    chosen = behaviour(name)
    _, val = training_data(name)
    extra = HELD_OUT_CHAT if chosen.chat else HELD_OUT_STORY
    return list(dict.fromkeys([p.prompt for p in val] + list(extra)))[: n or None]


def steered_or_plain(model: Any, code: Any, alpha: float):
    """`steer(model, code, α)`, or a no-op context for the unsteered cell (no code or α = 0)."""
    import contextlib

    return (
        steer(model, code, alpha) if code is not None and alpha != 0 else contextlib.nullcontext()
    )


class CellEvaluator:
    """Generates and scores cells of one behaviour (module docstring); holds the unsteered baseline."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        behaviour: Any,
        prompts: Sequence[str],
        neutral: Sequence[str],
        max_new_tokens: int,
    ) -> None:
        from saesteer.steer.behaviours import training_data

        if not prompts:
            raise ValueError(
                f"Behaviour {behaviour.name} has no held-out prompts to generate from."
            )
        self.model, self.tokenizer, self.behaviour = model, tokenizer, behaviour
        self.prompts = list(prompts)
        self.ids, self.mask = batch_prompt_ids(tokenizer, self.prompts, chat=behaviour.chat)
        self.prompt_rows = [row[m.bool()] for row, m in zip(self.ids, self.mask, strict=True)]
        self.max_new_tokens = max_new_tokens
        self.embed_layer = max(1, round(0.75 * model_facts(model)[2]))
        self.neutral_rows = [batch_prompt_ids(tokenizer, [p])[0][0] for p in neutral]
        self.neutral_logits = [lg for lg, _ in sequence_outputs(model, self.neutral_rows)]
        train, _ = training_data(behaviour.name)
        self.centroids = self._pair_centroids(train)
        self.baseline: dict[str, Any] | None = None

    def _pair_centroids(self, pairs: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_w, c_l): mean completion hidden states of chosen and rejected completions."""
        from saesteer.generation import prompt_token_ids

        rows, starts = [], []
        for pair in pairs:
            prompt = prompt_token_ids(self.tokenizer, pair.prompt, chat=self.behaviour.chat)[0]
            for completion in (pair.chosen, pair.rejected):
                tail = self.tokenizer(completion, add_special_tokens=False).input_ids or [0]
                rows.append(torch.cat([prompt, torch.tensor(tail)]))
                starts.append(prompt.numel())
        outputs = sequence_outputs(self.model, rows, self.embed_layer)
        means = [h[s:].mean(0) for (_, h), s in zip(outputs, starts, strict=True)]
        return torch.stack(means[0::2]).mean(0), torch.stack(means[1::2]).mean(0)

    def cell(self, code: Any, alpha: float) -> dict[str, Any]:
        """Every per-cell number (module docstring), per-prompt lists included."""
        started = time.time()
        eos = self.tokenizer.eos_token_id
        new = generate_ids_steered(
            self.model,
            self.ids,
            self.mask,
            code if alpha != 0 else None,
            alpha,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=eos,
        )
        generated = [row[: _length(row, eos)] for row in new]
        texts = [self.tokenizer.decode(g, skip_special_tokens=True).strip() for g in generated]
        gen_seconds = time.time() - started
        scored = self._score(generated, texts)
        scored["kl"] = self._neutral_kl(code, alpha) if code is not None and alpha != 0 else 0.0
        if self.baseline is not None:
            scored.update(self._side_effects(scored["attributes"]))
        scored["seconds"] = {
            "generation": gen_seconds,
            "scoring": time.time() - started - gen_seconds,
        }
        return scored

    def _neutral_kl(self, code: Any, alpha: float) -> float | None:
        """mean over neutral prompts of mean_t KL(p_0 ‖ p_α) of their next-token distributions;
        None for a controller (it steers from a prompt's end on: a neutral text has no prompt)."""
        if getattr(code, "controller", False):
            return None
        with steered_or_plain(self.model, code, alpha):
            steered = [lg for lg, _ in sequence_outputs(self.model, self.neutral_rows)]
        kl = [next_token_kl(p0, pa) for p0, pa in zip(self.neutral_logits, steered, strict=True)]
        return sum(kl) / len(kl)

    def _score(self, generated: list[torch.Tensor], texts: list[str]) -> dict[str, Any]:
        rows = [torch.cat([p, g]) for p, g in zip(self.prompt_rows, generated, strict=True)]
        outputs = sequence_outputs(self.model, rows, self.embed_layer)
        nll, embed = [], []
        c_w, c_l = self.centroids
        for (logits, hidden), prompt, gen, row in zip(
            outputs, self.prompt_rows, generated, rows, strict=True
        ):
            start = prompt.numel()
            nll.append(
                -continuation_logprobs(logits, row, start).sum().item() if gen.numel() else 0.0
            )
            if gen.numel():
                e = hidden[start:].mean(0)
                cos = torch.nn.functional.cosine_similarity
                embed.append(float(cos(e, c_w, dim=0) - cos(e, c_l, dim=0)))
            else:
                embed.append(0.0)
        tokens = [int(g.numel()) for g in generated]
        scores = [float(self.behaviour.score(t)) for t in texts]
        ids = [g.tolist() for g in generated]
        return {
            "texts": texts,
            "success": [float(self.behaviour.succeeded(t)) for t in texts],
            "score": scores,
            "embed": embed,
            "nll": nll,
            "tokens": tokens,
            "ppl": math.exp(sum(nll) / max(sum(tokens), 1)),
            "distinct_2": metrics.distinct_n(ids, 2),
            "repetition": mean_ngram_repetition(ids, 3),
            "compression": metrics.compression_ratio(texts),
            "attributes": [
                {**metrics.attributes(t), "target": s} for t, s in zip(texts, scores, strict=True)
            ],
        }

    def _side_effects(self, rows: list[dict[str, float]]) -> dict[str, Any]:
        """Side effects against the baseline's attributes; the behaviour's own attribute (sentiment
        or formality) is the target itself, not a side effect."""
        own = {"sentiment": "sentiment", "formality": "formality"}.get(self.behaviour.name)
        keep = lambda r: {k: v for k, v in r.items() if k != own}  # noqa: E731
        base = [keep(r) for r in self.baseline["attributes"]]
        return {"side_effects": metrics.side_effects([keep(r) for r in rows], base, "target")}


def _length(row: torch.Tensor, eos: int | None) -> int:
    """Tokens before the first EOS (the padding of a finished row)."""
    if eos is None:
        return row.numel()
    hits = (row == eos).nonzero()
    return int(hits[0, 0]) if hits.numel() else row.numel()
