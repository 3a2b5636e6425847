"""`saesteer bench-steer --alphas predicted`: a method's strengths chosen by a steerability predictor.

For behaviour b, method m and seed s (G = --strength-grid, n = b's held-out prompts, N =
--max-new-tokens):

    1. the predictor is trained on the OTHER behaviours only: m's codes for every b' ≠ b (fitted as
       the benchmark fits them, stored in OUT/codes/), rollouts of b''s held-out prompts on G
       (`collect_rollouts`, stored in OUT/strength/rollouts/seed<s>/, shared by every b), a grouped
       random search over those behaviours (`train_predictor`, --strength-trials draws);
    2. P(success) of every (prompt of b, α ∈ G) from K = 5 steered steps + replay; the grid ranked by
       the mean over prompts (ties: smaller α);
    3. benchmark cells (all n prompts, N tokens) at up to --strength-decodes strengths, best
       ranked first, pruned (`search.Candidates`): a cell over the perplexity limit closes every
       larger α, a cell within it every smaller α (a stronger α within the budget is taken to
       steer at least as well); these are the method's cells in the leaderboard;
    4. with --strength-compare (default), every other α of G is decoded too (stored as cells, not
       counted in the leaderboard) to report at equal footing:
           search   best success rate within the budget among the decoded top strengths,
                    tokens = K · G · n (features) + the tokens of those cells
           grid     best success rate within the budget over all of G, tokens of all G cells
       and `tokens_saved` = 1 − search tokens / grid tokens, `equal_success` = search ≥ grid.

The training rollouts are the predictor's offline cost (as in the paper), not counted in either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from saesteer.steer.asteer.features import FeatureSpec
from saesteer.steer.asteer.labels import OVER, SUCCESS, UNDER, LabelRule


def _rate(cell: dict[str, Any]) -> float:
    return sum(cell["success"]) / len(cell["success"]) if cell["success"] else 0.0


def _best_within(cells: list[dict[str, Any]], limit: float) -> dict[str, Any] | None:
    within = [c for c in cells if c["ppl"] <= limit]
    if not within:
        return None
    best = max(within, key=lambda c: (_rate(c), -c["alpha"]))
    return {"alpha": best["alpha"], "success_rate": _rate(best), "ppl": best["ppl"]}


def predicted_alphas(
    grid: Any,
    evaluator: Any,
    key: tuple[str, str, int],
    code: Any,
    spec: Any,
    cell_at: Callable[[float], Any],
    limit: float,
) -> dict[str, Any]:
    """Run steps 1–4 of the module docstring; `cell_at(α)` makes a leaderboard cell, `grid` is the
    benchmark's `_Grid` (config, store, codes, generator); returns the report of the search."""
    from saesteer.bench.evaluate import held_out_prompts
    from saesteer.steer.asteer.predictor import table_from_rows, train_predictor
    from saesteer.steer.asteer.rollouts import RolloutStore, collect_rollouts
    from saesteer.steer.asteer.search import Candidates, predict_grid, rank_grid
    from saesteer.steer.io import model_facts

    config = grid.config
    behaviour, _, seed = key
    alphas = config.strength_alphas()
    others = [b for b in config.behaviours if b != behaviour]
    if not others:
        raise ValueError(
            "--alphas predicted trains its predictor on the other behaviours: give at least two "
            "--behaviours."
        )
    fspec, rule = FeatureSpec(), LabelRule(config.budget)
    store = RolloutStore(grid.store.root / "strength" / "rollouts" / f"seed{seed}")
    rows: list[dict[str, Any]] = []
    for other in others:
        rows += collect_rollouts(
            grid.generator,
            grid.tokenizer,
            grid.code(spec, other, seed),
            other,
            spec.name,
            held_out_prompts(other, config.n_prompts),
            alphas,
            fspec,
            config.max_new_tokens,
            rule,
            store,
        )
    _, d_model, n_layers = model_facts(grid.generator)
    facts = {"name": config.model, "d_model": d_model, "n_layers": n_layers}
    predictor = train_predictor(table_from_rows(rows, fspec, facts), config.strength_trials, seed=0)
    p = predict_grid(grid.generator, code, evaluator.ids, evaluator.mask, alphas, predictor)
    mean_p = p[:, :, SUCCESS].mean(0)
    order = rank_grid(mean_p[None], alphas)[0]
    candidates, searched = Candidates(alphas, order), []
    while len(searched) < config.strength_decodes and (j := candidates.next()) is not None:
        searched.append(cell_at(alphas[j]))
        candidates.tell(j, OVER if searched[-1]["ppl"] > limit else UNDER)
    decoded = [c["alpha"] for c in searched]
    n = len(evaluator.prompts)
    report: dict[str, Any] = {
        "grid": alphas,
        "trained_on": others,
        "ranking": [{"alpha": alphas[j], "p_success": float(mean_p[j])} for j in order],
        "decoded": decoded,
        "search": {
            **(_best_within(searched, limit) or {"alpha": None, "success_rate": 0.0}),
            "tokens": int(
                fspec.k_steps * len(alphas) * n + sum(sum(c["tokens"]) for c in searched)
            ),
        },
    }
    if config.strength_compare:
        every = {c["alpha"]: c for c in searched}
        for alpha in alphas:
            if alpha not in every:
                every[alpha] = grid.cell(evaluator, key, code, alpha)
        cells = [every[a] for a in sorted(every)]
        report["grid_search"] = {
            **(_best_within(cells, limit) or {"alpha": None, "success_rate": 0.0}),
            "tokens": int(sum(sum(c["tokens"]) for c in cells)),
        }
        search, full = report["search"], report["grid_search"]
        report["tokens_saved"] = 1 - search["tokens"] / max(full["tokens"], 1)
        report["equal_success"] = bool(search["success_rate"] >= full["success_rate"] - 1e-12)
    report["cv_macro_f1"] = (
        float(np.max([t["cv_macro_f1"] for t in predictor.search])) if predictor.search else None
    )
    return report
