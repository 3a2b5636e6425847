"""Strength search: rank an α grid by predicted P(success), decode only the top candidates.

For a code, prompts x_1..x_n and a grid α_1..α_G:

    1. features f(x_i, α_j) for every (i, j): K steered steps + one replay each (`steer_features`),
       batched over prompts per α; p_ij = P(success | f(x_i, α_j)) from the predictor;
    2. per prompt, the grid in order of decreasing p_ij (ties: the smaller α first);
    3. with a judge (scorer + coherence rule, `saesteer.steer.asteer.labels.Judge`): fully decode the
       next open candidate of every prompt not yet successful (batched per α), at most
       `max_decodes` rounds (0: until none is open); a prompt's α is its first success, else its
       top-ranked candidate; without a judge: the top-ranked α, decoded once.

Pruning (`prune`, default on; `Candidates`): taking the labels as monotone in α along a prompt —
under below success below over — a decode's label closes a side of the grid,

    under at α_j  →  every α ≤ α_j closed        over at α_j  →  every α ≥ α_j closed,

and the search stops when no candidate is open (a prompt with no success on the grid costs a
few decodes, not G). One greedy rollout per α is not strictly monotone (u u u u S u u u o occurs),
so pruning can lose a success the grid finds (measured in RESULTS.md). The paper's search
(SteerBoost's alphasearch) has no pruning: `prune=False`.

Cost in decoded tokens: K · G per prompt for the features plus the tokens of every full decode.
The baselines on the same grid (`compare_on_table`, from complete rollout tables):

    grid       decode every α, keep a successful one (the per-item oracle's success; G decodes)
    sweep      decode α in increasing order until one succeeds
    bisection  no predictor: decode the open grid's lower median, prune, repeat (≤ ⌈log2(G+1)⌉)
    fixed      the one α with the best success rate over the items (chosen knowing every label)
    oracle     success if any α of the grid succeeds, at the cost of one decode

and the ascending sweep with pruning ("sweep, pruned": it stops at the first over).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saesteer.steer.asteer.features import FeatureSpec, check_alpha_grid, steer_features
from saesteer.steer.asteer.labels import CLASSES, OVER, SUCCESS, UNDER, rollout

JudgeFn = Callable[[float, Sequence[int], Sequence[dict[str, Any]]], list[str]]


def rank_grid(p_success: np.ndarray, grid: Sequence[float]) -> list[list[int]]:
    """Per row of p_success [n, G], grid indices by decreasing P(success), ties to the smaller α."""
    p = np.asarray(p_success, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(grid):
        raise ValueError(f"p_success must be [n, {len(grid)}], got {p.shape}.")
    return [sorted(range(len(grid)), key=lambda j, r=row: (-r[j], grid[j])) for row in p]


class Candidates:
    """The grid indices of one prompt still worth decoding, and which one to decode next.

    `order`: the predictor's ranking (grid indices, best first), or None for a predictor-free
    pick — `"ascending"` (the smallest open α) or `"bisect"` (the lower median open α). `tell`
    records a decode's label and, with `prune`, closes the side of the grid it rules out (module
    docstring)."""

    def __init__(
        self,
        grid: Sequence[float],
        order: Sequence[int] | None = None,
        pick: str = "ranked",
        prune: bool = True,
    ) -> None:
        if (order is None) != (pick != "ranked") or pick not in ("ranked", "ascending", "bisect"):
            raise ValueError(
                "Candidates: give an order with pick 'ranked', else 'ascending'/'bisect'."
            )
        self.grid, self.pick, self.prune = list(grid), pick, prune
        self.order = (
            list(order)
            if order is not None
            else sorted(range(len(self.grid)), key=self.grid.__getitem__)
        )
        self.open = set(self.order)

    def next(self) -> int | None:
        """The next grid index to decode, or None when none is open."""
        if not self.open:
            return None
        if self.pick == "bisect":
            by_alpha = sorted(self.open, key=self.grid.__getitem__)
            return by_alpha[(len(by_alpha) - 1) // 2]
        return next(j for j in self.order if j in self.open)

    def tell(self, j: int, label: int | str) -> None:
        """Close α_j, and with pruning every α on the side its label (`CLASSES` index or name)
        rules out."""
        label = CLASSES.index(label) if isinstance(label, str) else int(label)
        alpha = self.grid[j]
        self.open.discard(j)
        if self.prune and label == UNDER:
            self.open = {i for i in self.open if self.grid[i] > alpha}
        elif self.prune and label == OVER:
            self.open = {i for i in self.open if self.grid[i] < alpha}


@dataclass
class SearchResult:
    """Per prompt: the chosen α, whether a decode at it succeeded (None: no judge), full decodes,
    decoded tokens (features + full decodes), the text at the chosen α and the ranking."""

    alphas: list[float]
    success: list[bool | None]
    decodes: list[int]
    tokens: list[int]
    texts: list[str]
    ranked: list[list[tuple[float, float]]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        judged = [s for s in self.success if s is not None]
        return {
            "success_rate": sum(judged) / len(judged) if judged else None,
            "tokens": int(sum(self.tokens)),
            "decodes": int(sum(self.decodes)),
            "n": len(self.alphas),
        }


def predict_grid(
    model: Any,
    code: Any,
    prompt_ids: Any,
    prompt_mask: Any,
    grid: Sequence[float],
    predictor: Any,
    spec: FeatureSpec | None = None,
) -> np.ndarray:
    """[n_prompts, G, 3] class probabilities of every (prompt, α)."""
    grid = check_alpha_grid(grid)
    spec = spec or predictor.spec
    columns = [
        predictor.predict_proba(
            steer_features(model, code, prompt_ids, prompt_mask, alpha, spec).numpy()
        )
        for alpha in grid
    ]
    return np.stack(columns, 1)


def search_strength(
    model: Any,
    tokenizer: Any,
    code: Any,
    prompts: Sequence[str],
    grid: Sequence[float],
    predictor: Any,
    judge: JudgeFn | None = None,
    chat: bool = False,
    max_new_tokens: int = 40,
    max_decodes: int = 3,
    scorer_model: Any = None,
    prune: bool = True,
) -> SearchResult:
    """The search of the module docstring for each prompt (live: decodes with the model).

    `predictor` None: the predictor-free ascending sweep (no feature steps; with pruning it stops
    at the first over-steered decode), the cheaper choice at short replies (RESULTS.md)."""
    from saesteer.steer.generate import batch_prompt_ids

    grid = check_alpha_grid(grid)
    if max_decodes < 0:
        raise ValueError(
            f"max_decodes must be ≥ 0 (0: until no candidate is open), got {max_decodes}."
        )
    ids, mask = batch_prompt_ids(tokenizer, prompts, chat=chat)
    n = len(prompts)
    if predictor is None:
        p = np.full((n, len(grid)), np.nan)
        order = [sorted(range(len(grid)), key=grid.__getitem__)] * n
        tokens = [0] * n
    else:
        p = predict_grid(model, code, ids, mask, grid, predictor)[:, :, SUCCESS]
        order = rank_grid(p, grid)
        tokens = [predictor.spec.k_steps * len(grid)] * n
    decodes = [0] * n
    chosen: list[int | None] = [None] * n
    texts = [""] * n
    first: dict[int, tuple[int, dict[str, Any]]] = {}
    open_ = [Candidates(grid, order[i], prune=prune) for i in range(n)]
    rounds = 1 if judge is None else min(max_decodes or len(grid), len(grid))
    for _ in range(rounds):
        by_alpha: dict[int, list[int]] = {}
        for i in range(n):
            j = open_[i].next() if chosen[i] is None else None
            if j is not None:
                by_alpha.setdefault(j, []).append(i)
        if not by_alpha:
            break
        for j, items in sorted(by_alpha.items()):
            outs = rollout(
                model,
                tokenizer,
                code,
                grid[j],
                ids[items],
                mask[items],
                max_new_tokens,
                scorer_model,
            )
            labels = judge(grid[j], items, outs) if judge is not None else [None] * len(items)
            for i, out, label in zip(items, outs, labels, strict=True):
                decodes[i] += 1
                tokens[i] += out["tokens"]
                first.setdefault(i, (j, out))
                if judge is None or label == "success":
                    chosen[i], texts[i] = j, out["text"]
                else:
                    open_[i].tell(j, label)
    success: list[bool | None] = []
    for i in range(n):
        if chosen[i] is None:  # no candidate succeeded: the top-ranked one
            chosen[i], texts[i] = first[i][0], first[i][1]["text"]
            success.append(False)
        else:
            success.append(None if judge is None else True)
    return SearchResult(
        [grid[j] for j in chosen],  # type: ignore[index]
        success,
        decodes,
        tokens,
        texts,
        [[(grid[j], float(p[i, j])) for j in order[i]] for i in range(n)],
    )


def grid_search(
    model: Any,
    tokenizer: Any,
    code: Any,
    prompts: Sequence[str],
    grid: Sequence[float],
    judge: JudgeFn,
    chat: bool = False,
    max_new_tokens: int = 40,
    scorer_model: Any = None,
) -> SearchResult:
    """Decode every α of the grid for every prompt; a prompt's α is its smallest successful one
    (else the smallest α)."""
    from saesteer.steer.generate import batch_prompt_ids

    grid = check_alpha_grid(grid)
    ids, mask = batch_prompt_ids(tokenizer, prompts, chat=chat)
    n = len(prompts)
    order = sorted(range(len(grid)), key=lambda j: grid[j])
    chosen: list[int | None] = [None] * n
    texts, tokens = [""] * n, [0] * n
    fallback: dict[int, str] = {}
    for j in order:
        items = list(range(n))
        outs = rollout(model, tokenizer, code, grid[j], ids, mask, max_new_tokens, scorer_model)
        for i, out, label in zip(items, outs, judge(grid[j], items, outs), strict=True):
            tokens[i] += out["tokens"]
            fallback.setdefault(i, out["text"])
            if label == "success" and chosen[i] is None:
                chosen[i], texts[i] = j, out["text"]
    success = [c is not None for c in chosen]
    alphas = [grid[c] if c is not None else grid[order[0]] for c in chosen]
    texts = [t if s else fallback[i] for i, (t, s) in enumerate(zip(texts, success, strict=True))]
    return SearchResult(alphas, list(success), [len(grid)] * n, tokens, texts)


def _simulate(
    candidates: Candidates, labels: np.ndarray, tokens: np.ndarray, budget: int
) -> tuple[bool, float, int]:
    """Decode one item's candidates from its complete rollouts until a success, no open candidate
    or `budget` decodes (0: no cap); returns (success, tokens of the decodes, decodes)."""
    spent, decodes = 0.0, 0
    while budget == 0 or decodes < budget:
        j = candidates.next()
        if j is None:
            break
        spent, decodes = spent + float(tokens[j]), decodes + 1
        if labels[j] == SUCCESS:
            return True, spent, decodes
        candidates.tell(j, int(labels[j]))
    return False, spent, decodes


def compare_on_table(
    p_success: np.ndarray,
    labels: np.ndarray,
    tokens: np.ndarray,
    grid: Sequence[float],
    k_steps: int,
    budgets: Sequence[int] = (1, 2, 3),
) -> dict[str, Any]:
    """Search vs the baselines (module docstring) offline, from complete rollouts of n items.

    p_success [n, G] predicted; labels [n, G] true class indices; tokens [n, G] tokens of each
    full decode. Policies: `search@b` (the paper's: the b best-ranked, no pruning) and `search`
    (no cap: it reaches the grid's success), `search@b, pruned` and `search, pruned` (no cap),
    the predictor-free `sweep`, `sweep, pruned`, `bisection`, and `grid`, `fixed`, `oracle`.
    Returns {policy: {success_rate, tokens, tokens_per_item, decodes}}; ranked policies' tokens
    include the K·G feature steps per item."""
    p, lab, tok = (np.asarray(a) for a in (p_success, labels, tokens))
    n, g = lab.shape
    if p.shape != (n, g) or tok.shape != (n, g) or len(grid) != g:
        raise ValueError(f"p_success, labels and tokens must all be [n, {len(grid)}].")
    ok = lab == SUCCESS
    order = rank_grid(p, grid)
    features = float(k_steps * g)

    def entry(success: Any, spent: float, decodes: float) -> dict[str, Any]:
        success = np.asarray(success, dtype=bool)
        return {
            "success_rate": float(success.mean()) if n else 0.0,
            "tokens": float(spent),
            "tokens_per_item": float(spent / n) if n else 0.0,
            "decodes": float(decodes),
        }

    def policy(make: Callable[[int], Candidates], budget: int, cost: float) -> dict[str, Any]:
        runs = [_simulate(make(i), lab[i], tok[i], budget) for i in range(n)]
        return entry(
            [r[0] for r in runs], cost * n + sum(r[1] for r in runs), sum(r[2] for r in runs)
        )

    out: dict[str, Any] = {}
    for budget in budgets:
        b = min(budget, g)
        out[f"search@{b}"] = policy(lambda i: Candidates(grid, order[i], prune=False), b, features)
    out["search"] = policy(lambda i: Candidates(grid, order[i], prune=False), 0, features)
    last = min(max(budgets, default=g), g)
    out[f"search@{last}, pruned"] = policy(lambda i: Candidates(grid, order[i]), last, features)
    out["search, pruned"] = policy(lambda i: Candidates(grid, order[i]), 0, features)
    out["grid"] = entry(ok.any(1), tok.sum(), n * g)
    out["sweep"] = policy(lambda i: Candidates(grid, pick="ascending", prune=False), 0, 0.0)
    out["sweep, pruned"] = policy(lambda i: Candidates(grid, pick="ascending"), 0, 0.0)
    out["bisection"] = policy(lambda i: Candidates(grid, pick="bisect"), 0, 0.0)
    best = int(np.argmax(ok.mean(0) - 1e-9 * np.asarray(grid)))
    out["fixed"] = {**entry(ok[:, best], tok.sum(), n * g), "alpha": float(grid[best])}
    smallest = int(np.argmin(grid))
    oracle_tokens = sum(
        tok[i, int(np.argmax(ok[i]))] if ok[i].any() else tok[i, smallest] for i in range(n)
    )
    out["oracle"] = entry(ok.any(1), oracle_tokens, n)
    return out
