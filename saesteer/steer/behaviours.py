"""Behaviour data sets shipped with saesteer (in `saesteer/data/`), each with a scorer.

    name                train / val   prompt style  chosen vs rejected
    sentiment           60 / 18       continuation  positive vs negative story endings
    formality           36 / 12       chat          formal vs casual replies
    topic-ocean         36 / 12       chat          talks about the ocean vs elsewhere
    topic-food          48 / 16       chat          talks about food vs other activities
    style-enthusiastic  48 / 16       chat          enthusiastic, exclamatory vs flat replies

Validation prompts never appear in training. Written for saesteer (Apache-2.0, like the code).
`success_rate(name, texts)` is the fraction of generations the behaviour's scorer counts as showing
the chosen side (thresholds in `saesteer.steer.scorers`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from saesteer.steer import scorers
from saesteer.steer.pairs import PreferencePair, read_pairs

SPLITS = ("train", "validation")


@dataclass(frozen=True)
class Behaviour:
    """A shipped data set: how to prompt it and how to score generations."""

    name: str
    description: str
    chat: bool
    score: Callable[[str], float]
    success_threshold: float  # a text shows the behaviour when score(text) ≥ this
    instructions: tuple[str, str] = ("", "")
    """System-prompt contrast (asks for the chosen side, asks for the rejected side): for methods
    that contrast prompts rather than completions (CDAS sources, StTP/StMP probes)."""

    def instructed(self, pair: PreferencePair, side: int) -> PreferencePair:
        """`pair` asked with instruction `side` (0: the chosen side's, 1: the rejected side's):
        a chat pair gets it as its system message, a continuation pair as a bracketed preface."""
        text = self.instructions[side]
        if not text:
            raise ValueError(f"The behaviour {self.name!r} has no system-prompt contrast.")
        if self.chat:
            return dataclasses.replace(pair, system=text)
        return dataclasses.replace(pair, prompt=f"({text}) {pair.prompt}")

    def succeeded(self, text: str) -> bool:
        return self.score(text) >= self.success_threshold


BEHAVIOURS = {
    b.name: b
    for b in (
        Behaviour(
            "sentiment",
            "positive (vs negative) sentiment in story continuations",
            False,
            scorers.sentiment_score,
            0.05,
            ("A happy, hopeful story", "A sad, bleak story"),
        ),
        Behaviour(
            "formality",
            "formal (vs casual) register in replies",
            True,
            scorers.formality_score,
            1e-9,
            (
                "Reply in a formal, polite, professional register.",
                "Reply casually, like texting a friend, with slang.",
            ),
        ),
        Behaviour(
            "topic-ocean",
            "talks about the ocean (vs other places)",
            True,
            scorers.ocean_score,
            1e-9,
            (
                "Always bring the ocean, the sea or the beach into your reply.",
                "Never mention the ocean or the sea; talk about inland places.",
            ),
        ),
        Behaviour(
            "topic-food",
            "talks about food and cooking (vs other pastimes)",
            True,
            scorers.food_score,
            1e-9,
            (
                "Always bring food, cooking or eating into your reply.",
                "Never mention food; talk about other pastimes.",
            ),
        ),
        Behaviour(
            "style-enthusiastic",
            "enthusiastic, exclamatory (vs flat, matter-of-fact) replies",
            True,
            scorers.enthusiasm_score,
            0.05,
            (
                "Reply with great enthusiasm and excitement, with exclamation marks!",
                "Reply in a flat, dry, matter-of-fact tone.",
            ),
        ),
    )
}


def behaviour(name: str) -> Behaviour:
    """The shipped behaviour `name` (clear error listing the names)."""
    if name not in BEHAVIOURS:
        raise ValueError(f"Unknown behaviour data set {name!r}; shipped: {sorted(BEHAVIOURS)}.")
    return BEHAVIOURS[name]


def behaviour_file(name: str, split: str) -> Path:
    """Path of a shipped split's JSONL file."""
    behaviour(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    return Path(str(resources.files("saesteer") / "data" / f"{name}.{split}.jsonl"))


def behaviour_pairs(name: str, split: str = "train") -> list[PreferencePair]:
    """The pairs of a shipped data set's split."""
    return read_pairs(behaviour_file(name, split))


def load_pairs(spec: str, split: str = "train") -> list[PreferencePair]:
    """A shipped data set name (its `split`) or a JSONL file path."""
    return behaviour_pairs(spec, split) if spec in BEHAVIOURS else read_pairs(spec)


def success_rate(name: str, texts: Sequence[str]) -> float:
    """Fraction of `texts` that show behaviour `name` by its scorer."""
    if not texts:
        raise ValueError("No texts to score.")
    chosen = behaviour(name)
    return sum(chosen.succeeded(t) for t in texts) / len(texts)


def training_data(
    pairs: str, validation: str | None = None, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, validation) pairs: a shipped name gives its two splits; a file is split by
    `val_fraction` (seeded shuffle) unless a `validation` file is given."""
    import random

    train = load_pairs(pairs, "train")
    if validation is not None:
        return train, read_pairs(validation)
    if pairs in BEHAVIOURS:
        return train, behaviour_pairs(pairs, "validation")
    if len(train) < 2:
        raise ValueError(
            f"{pairs}: need at least 2 pairs to hold some out; give --validation FILE."
        )
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * len(train)))
    return [train[i] for i in order[n_val:]], [train[i] for i in order[:n_val]]
