"""`saesteer generate --steer DIR --alpha auto`: each prompt at the α the predictor likes best.

    α_i = argmax_j P(success | f(x_i, α_j))   over the grid (ties: the smaller α)

The grid is `--alpha-grid` or the one the predictor was trained on (its info["grid"]), else
DEFAULT_GRID. The predictor is `--strength-model DIR` or `default_predictor_dir()`
(SAESTEER_CACHE_DIR/strength-models/default, where benchmarks/asteer.py --install puts one).
Prompts that share an α are generated in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from saesteer.steer.asteer.labels import SUCCESS
from saesteer.steer.asteer.options import AUTO, parse_grid

DEFAULT_GRID = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
__all__ = [
    "AUTO",
    "DEFAULT_GRID",
    "choose_alphas",
    "generate_auto",
    "load_strength_model",
    "parse_grid",
]


def default_predictor_dir() -> Path:
    from saesteer.paths import cache_dir

    return cache_dir() / "strength-models" / "default"


def load_strength_model(folder: str | None, model: Any = None, model_name: str = ""):
    """The predictor from `folder` (None: the default location), checked against `model`."""
    from saesteer.steer.asteer.predictor import load_predictor
    from saesteer.steer.io import model_facts

    path = Path(folder) if folder else default_predictor_dir()
    if not folder and not path.is_dir():
        raise FileNotFoundError(
            f"--alpha auto needs a strength predictor: pass --strength-model DIR or put one at "
            f"{path} (python benchmarks/asteer.py --install)."
        )
    predictor = load_predictor(path)
    if model is not None:
        name, d_model, n_layers = model_facts(model)
        predictor.check_model(d_model, n_layers, model_name or name)
    return predictor


def choose_alphas(
    model: Any,
    tokenizer: Any,
    code: Any,
    prompts: Sequence[str],
    predictor: Any,
    grid: Sequence[float] | None = None,
    chat: bool = False,
) -> tuple[list[float], list[list[float]]]:
    """(α per prompt, P(success) per prompt and grid α) by the rule of the module docstring."""
    from saesteer.steer.asteer.search import predict_grid, rank_grid
    from saesteer.steer.generate import batch_prompt_ids

    grid = list(grid or predictor.info.get("grid") or DEFAULT_GRID)
    ids, mask = batch_prompt_ids(tokenizer, prompts, chat=chat)
    p = predict_grid(model, code, ids, mask, grid, predictor)[:, :, SUCCESS]
    order = rank_grid(p, grid)
    return [grid[o[0]] for o in order], p.tolist()


def generate_auto(
    model: Any,
    tokenizer: Any,
    code: Any,
    prompts: Sequence[str],
    predictor: Any,
    grid: Sequence[float] | None = None,
    chat: bool = False,
    positions: str = "all",
    **kwargs: Any,
) -> tuple[list[str], list[float]]:
    """(texts, chosen α) of `prompts`; kwargs go to `generate_steered` (max_new_tokens, ...)."""
    from saesteer.steer.generate import generate_steered

    alphas, _ = choose_alphas(model, tokenizer, code, prompts, predictor, grid, chat)
    texts = [""] * len(prompts)
    for alpha in sorted(set(alphas)):
        items = [i for i, a in enumerate(alphas) if a == alpha]
        out = generate_steered(
            model,
            tokenizer,
            [prompts[i] for i in items],
            code,
            alpha,
            positions,
            chat=chat,
            **kwargs,
        )
        for i, text in zip(items, out, strict=True):
            texts[i] = text
    return texts, alphas
