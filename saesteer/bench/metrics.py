"""The steering benchmark's numbers, as plain functions of texts, token ids and floats.

Coherence of one generation g with token ids w_1..w_m and text bytes b:

    distinct_n   = #distinct n-grams / #n-grams over all generations of a cell (1: no repeats)
    compression  = |b| / |zlib(b)|    per generation, mean over generations (≈ 1 for short varied
                                      text, ≫ 1 for loops); empty generations are skipped
    coherence    = min(1, ppl_0 / ppl_α)        1 at the unsteered fluency, ½ at twice its ppl

Attributes of a text (the goal space of "A Course Correction in Steerability Evaluation"):

    length       words
    grade        Flesch–Kincaid grade 0.39 · words/sentences + 11.8 · syllables/words − 15.59
    sentiment    VADER compound polarity in [−1, 1]
    formality    (formal − casual markers) / words (`saesteer.steer.scorers.formality_score`)

Side effects of a cell at α, with attribute means ā_α over its generations and σ_0 the standard
deviation of the attribute over the unsteered generations (floored, so flat attributes stay finite):

    Δ_j   = (ā_α,j − ā_0,j) / σ_0,j         displacement in units of the unsteered spread
    e     = the unit vector of the behaviour's own score (the requested change)
    along = Δ · e;   side = ‖Δ − along · e‖     the off-target (orthogonal) part of the change

Combined score (AxBench and CLaS-Bench combine this way): the harmonic mean of success s and
coherence c, H = 2 s c / (s + c), 0 when either is 0.

Read at equal coherence (`success_at_budget`): the success interpolated along a strength curve
(α = 0 first, α increasing) where ppl first reaches the budget limit.

Uncertainty: `bootstrap_interval` resamples seeds, then prompts within each seed;
`paired_difference_interval` resamples prompts once for both methods (the same prompts were
generated from by both) and seeds independently: two methods are *not distinguishable* when the
95 % interval of their difference contains 0.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import zlib
from collections.abc import Sequence

_WORD = re.compile(r"[A-Za-z']+")
_SENTENCE_END = re.compile(r"[.!?]+")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")
ATTRIBUTES = ("length", "grade", "sentiment", "formality")
SPREAD_FLOOR = {"length": 1.0, "grade": 0.5, "sentiment": 0.05, "formality": 0.01}


def distinct_n(sequences: Sequence[Sequence[int]], n: int = 2) -> float:
    """Distinct n-grams / n-grams pooled over sequences (1.0 when there is no n-gram)."""
    grams = [tuple(s[i : i + n]) for s in sequences for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def compression_ratio(texts: Sequence[str]) -> float:
    """Mean |bytes| / |zlib(bytes)| over non-empty texts (1.0 when all are empty)."""
    ratios = [
        len(raw) / len(zlib.compress(raw, 9)) for raw in (t.encode() for t in texts if t.strip())
    ]
    return sum(ratios) / len(ratios) if ratios else 1.0


def syllables(word: str) -> int:
    """Vowel groups of a word, a silent final e dropped; at least 1 (the usual heuristic)."""
    word = word.lower().strip("'")
    count = len(_VOWEL_GROUP.findall(word))
    if word.endswith("e") and not word.endswith(("le", "ee")) and count > 1:
        count -= 1
    return max(count, 1)


def reading_grade(text: str) -> float:
    """Flesch–Kincaid grade of `text` (module docstring); 0 for a text with no words."""
    words = _WORD.findall(text)
    if not words:
        return 0.0
    sentences = max(len([s for s in _SENTENCE_END.split(text) if _WORD.search(s)]), 1)
    per_word = sum(syllables(w) for w in words) / len(words)
    return 0.39 * len(words) / sentences + 11.8 * per_word - 15.59


def attributes(text: str) -> dict[str, float]:
    """The four goal-space attributes of one text (module docstring)."""
    from saesteer.steer.scorers import formality_score, sentiment_score

    return {
        "length": float(len(_WORD.findall(text))),
        "grade": reading_grade(text),
        "sentiment": sentiment_score(text),
        "formality": formality_score(text),
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _std(values: Sequence[float]) -> float:
    mean = _mean(values)
    return math.sqrt(_mean([(v - mean) ** 2 for v in values]))


def side_effects(
    steered: Sequence[dict[str, float]], unsteered: Sequence[dict[str, float]], target: str
) -> dict[str, float]:
    """{"delta_<attr>": Δ_j, "along": Δ·e, "side": ‖Δ − (Δ·e) e‖} of a cell (module docstring).

    Rows are per-generation attribute dicts holding the same keys; `target` is the key of the
    behaviour's own score (the requested direction e).
    """
    keys = list(unsteered[0])
    delta = {}
    for key in keys:
        spread = max(_std([r[key] for r in unsteered]), SPREAD_FLOOR.get(key, 1e-3))
        delta[key] = (
            _mean([r[key] for r in steered]) - _mean([r[key] for r in unsteered])
        ) / spread
    along = delta[target]
    side = math.sqrt(sum(v * v for k, v in delta.items() if k != target))
    return {**{f"delta_{k}": v for k, v in delta.items()}, "along": along, "side": side}


def coherence(ppl: float, ppl_unsteered: float) -> float:
    """min(1, ppl_0 / ppl); 0 for an infinite or NaN perplexity."""
    if not math.isfinite(ppl) or ppl <= 0:
        return 0.0
    return min(1.0, ppl_unsteered / ppl)


def harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b), 0 when either is ≤ 0."""
    return 2 * a * b / (a + b) if a > 0 and b > 0 else 0.0


def success_at_budget(curve: Sequence[tuple[float, float]], limit: float) -> tuple[float, bool]:
    """Success where ppl first reaches `limit` along a curve of (ppl, success) points, α = 0
    first then increasing α, linearly interpolated; (value, reached): reached False means every
    point stays within the budget and the value is the last point's success (a lower bound)."""
    for (ppl_a, s_a), (ppl_b, s_b) in itertools.pairwise(curve):
        if ppl_b >= limit:
            t = (limit - ppl_a) / (ppl_b - ppl_a) if ppl_b > ppl_a else 0.0
            return s_a + min(max(t, 0.0), 1.0) * (s_b - s_a), True
    return curve[-1][1], False


def _resampled_mean(values: Sequence[Sequence[float]], rng: random.Random, picks=None) -> float:
    seeds = [values[rng.randrange(len(values))] for _ in values]
    means = []
    for s in seeds:
        rows = picks if picks is not None else [rng.randrange(len(s)) for _ in s]
        means.append(_mean([s[i] for i in rows]))
    return _mean(means)


def _interval(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    n = len(samples)
    return samples[int(0.025 * n)], samples[max(int(0.975 * n) - 1, 0)]


def bootstrap_interval(
    values: Sequence[Sequence[float]], n: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95 % interval of the mean of values[seed][prompt] (seeds, then prompts, resampled)."""
    rng = random.Random(seed)
    return _interval([_resampled_mean(values, rng) for _ in range(n)])


def paired_difference_interval(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], n: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95 % interval of mean(a) − mean(b); values[seed][prompt] over the same prompts in a and b."""
    n_prompts = len(a[0])
    if any(len(row) != n_prompts for row in (*a, *b)):
        raise ValueError("A paired interval needs the same prompts in every seed of both methods.")
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        picks = [rng.randrange(n_prompts) for _ in range(n_prompts)]
        samples.append(_resampled_mean(a, rng, picks) - _resampled_mean(b, rng, picks))
    return _interval(samples)
