"""Training rollouts for the strength predictor, stored so that a killed run resumes.

For one behaviour, one code (named `method`), prompts x_1..x_n and a grid α_1..α_G, each
(x_i, α_j) gives one record

    {behaviour, method, alpha, prompt, features (steer_features), label (labels.label_of),
     tokens, ppl, repetition, text}

computed per α in one batch over the prompts: the K-step feature decode + replay and the full
rollout (N tokens) scored by the unsteered model. The unsteered rollouts of the prompts (α = 0)
are computed once per behaviour and set the perplexity reference.

Storage (`RolloutStore(folder)`): folder/<behaviour>/_unsteered.json and
folder/<behaviour>/<method>/alpha=<α>.json (JSON, written atomically); a stored cell is reused when
its prompts, feature spec, token budget and label rule match, else it is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from saesteer.steer.asteer.features import FeatureSpec, check_alpha_grid, steer_features
from saesteer.steer.asteer.labels import Judge, LabelRule, pooled_ppl, rollout


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)


class RolloutStore:
    """JSON files of rollout cells under `folder` (module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.root = Path(folder)

    def path(self, behaviour: str, method: str | None, alpha: float | None) -> Path:
        if method is None:
            return self.root / _safe(behaviour) / "_unsteered.json"
        return self.root / _safe(behaviour) / _safe(method) / f"alpha={float(alpha)!r}.json"

    def read(self, path: Path, key: str) -> list[dict[str, Any]] | None:
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return stored["rows"] if stored.get("key") == key else None

    def write(self, path: Path, key: str, rows: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "rows": rows}))
        tmp.replace(path)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def collect_rollouts(
    model: Any,
    tokenizer: Any,
    code: Any,
    behaviour: str,
    method: str,
    prompts: Sequence[str],
    grid: Sequence[float],
    spec: FeatureSpec | None = None,
    max_new_tokens: int = 40,
    rule: LabelRule | None = None,
    store: RolloutStore | None = None,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Records of every (prompt, α) (module docstring); `progress`: a tqdm bar, one step per α."""
    from saesteer.steer.behaviours import behaviour as shipped
    from saesteer.steer.generate import batch_prompt_ids

    grid = check_alpha_grid(grid)
    spec, rule = spec or FeatureSpec(), rule or LabelRule()
    chosen = shipped(behaviour)
    if not prompts:
        raise ValueError(f"No prompts for behaviour {behaviour}.")
    ids, mask = batch_prompt_ids(tokenizer, prompts, chat=chosen.chat)
    base_key = _key(list(prompts), max_new_tokens, chosen.chat)
    base_path = store.path(behaviour, None, None) if store else None
    base = store.read(base_path, base_key) if store else None
    if base is None:
        base = rollout(model, tokenizer, None, 0.0, ids, mask, max_new_tokens)
        if store:
            store.write(base_path, base_key, base)
    judge = Judge(chosen.succeeded, pooled_ppl(base), rule)
    key = _key(base_key, spec.to_dict(), asdict(rule), judge.reference_ppl)
    rows: list[dict[str, Any]] = []
    for alpha in grid:
        path = store.path(behaviour, method, alpha) if store else None
        cell = store.read(path, key) if store else None
        if cell is None:
            features = steer_features(model, code, ids, mask, alpha, spec)
            outs = rollout(model, tokenizer, code, alpha, ids, mask, max_new_tokens)
            labels = judge(alpha, range(len(prompts)), outs)
            cell = [
                {
                    "behaviour": behaviour,
                    "method": method,
                    "alpha": alpha,
                    "prompt": prompt,
                    "features": f.tolist(),
                    "label": label,
                    "tokens": out["tokens"],
                    "ppl": out["ppl"],
                    "repetition": out["repetition"],
                    "text": out["text"],
                }
                for prompt, f, out, label in zip(prompts, features, outs, labels, strict=True)
            ]
            if store:
                store.write(path, key, cell)
        rows += cell
        if progress is not None:
            progress.update()
    return rows
