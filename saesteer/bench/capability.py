"""Capability retention under steering: multiple-choice accuracy and held-out Brown perplexity.

Multiple choice (`saesteer/data/capability_mc.jsonl`, 120 general-knowledge items written for
saesteer, 4 options each, answers spread evenly over the positions). Item q with options o_1..o_4
is scored by the steered model's mean log-probability of each option's tokens after the prompt

    "Question: {q}\\nAnswer:"  +  " {o_j}"
    pick(q) = argmax_j (1/|o_j|) Σ_t log p_α(o_j,t | prompt, o_j,<t)
    accuracy = mean_q [pick(q) = answer(q)]          chance 0.25

(the per-token mean keeps multi-token options from losing by length alone).

Held-out Brown perplexity: exp of the mean negative log-likelihood of the tokens of the corpus'
validation split (documents never cached for SAE training), contexts of 128 tokens, under the
steered model: how much general language modelling the edit costs.

A Guiding Giants controller (`saesteer.steer.controlled`) steers from the end of a prompt on, so
it is scored as it generates: each item row alone inside `controller.scoring([|prompt|])` (the
question is read, the option tokens are patched). A Brown context has no prompt to read: its
perplexity is None (not measured) for a controller.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import torch

from saesteer.bench.forward import continuation_logprobs, sequence_outputs

CONTEXT_LEN = 128


@cache
def mc_items() -> tuple[dict[str, Any], ...]:
    """The shipped multiple-choice items, each {question, options, answer, topic}."""
    path = resources.files("saesteer") / "data" / "capability_mc.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line) for line in lines if line.strip())


class CapabilityProbe:
    """Scores one steered model on the items and the Brown contexts (module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, n_items: int, brown_tokens: int) -> None:
        self.model = model
        self.items = list(mc_items())[: n_items or None]
        self.rows, self.starts = [], []
        for item in self.items:
            prompt = tokenizer(f"Question: {item['question']}\nAnswer:").input_ids
            for option in item["options"]:
                tail = tokenizer(f" {option}", add_special_tokens=False).input_ids
                self.rows.append(torch.tensor(prompt + tail))
                self.starts.append(len(prompt))
        self.brown = []
        if brown_tokens:
            from saesteer.corpus.contexts import make_contexts

            contexts = make_contexts(
                tokenizer, "brown", CONTEXT_LEN, n_tokens=brown_tokens, split="validation"
            )
            self.brown = [torch.as_tensor(r, dtype=torch.long) for r in contexts.tokens]

    def option_scores(self, controller: Any = None) -> list[float]:
        """The mean option log-probability of every (item, option) row, items in order."""
        if controller is None:
            outputs = sequence_outputs(self.model, self.rows)
        else:
            outputs = []
            for row, start in zip(self.rows, self.starts, strict=True):
                with controller.scoring([start]):
                    outputs += sequence_outputs(self.model, [row])
        return [
            continuation_logprobs(logits, row, start).mean().item()
            for (logits, _), row, start in zip(outputs, self.rows, self.starts, strict=True)
        ]

    def measure(self, controller: Any = None) -> dict[str, Any]:
        """{"mc_accuracy", "mc_correct" [per item], "brown_ppl"} of the model as it runs now
        (call inside `steer(...)` for a steered model; pass the controller steered with, if any:
        module docstring)."""
        means = self.option_scores(controller)
        correct = []
        for i, item in enumerate(self.items):
            scores = means[4 * i : 4 * i + 4]
            correct.append(float(max(range(4), key=scores.__getitem__) == item["answer"]))
        result: dict[str, Any] = {
            "mc_accuracy": sum(correct) / len(correct) if correct else None,
            "mc_correct": correct,
            "brown_ppl": None,
        }
        if self.brown and controller is None:
            nll = torch.cat(
                [
                    -continuation_logprobs(logits, row, 1)
                    for (logits, _), row in zip(
                        sequence_outputs(self.model, self.brown), self.brown, strict=True
                    )
                ]
            )
            result["brown_ppl"] = float(nll.mean().exp())
        return result
