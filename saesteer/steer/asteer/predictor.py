"""The steerability predictor: P(under, success, over | features of (code, prompt, α)).

A `HistGradientBoostingClassifier` (scikit-learn; class_weight="balanced", no early stopping, seeded)
fitted on a `StrengthTable` (feature rows X, labels y ∈ {0: under, 1: success, 2: over}, group =
the behaviour of each row). Hyper-parameters come from a seeded random search of `n_trials` draws
(trial 0 = the defaults) scored by grouped cross-validated macro-F1: leave-one-behaviour-out folds,
so every score is on a behaviour the fold never trained on. `leave_one_group_out` reports macro-F1
on held-out behaviours from that search's best trial, or (nested=True) with a search per held-out
behaviour over the others only.

Saving stores no model: the folder holds the training table (table.safetensors: X float64,
y int64, groups int64) and predictor.json (feature names, feature spec, group names, chosen
hyper-parameters, seed, the model's width and depth, the table's sha256). `load_predictor`
checks the checksum and what it was trained for, then refits; the fit is deterministic (fixed
random_state, no early stopping), so predictions are identical to the saved predictor's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saesteer.steer.asteer.features import FeatureSpec, feature_names
from saesteer.steer.asteer.labels import CLASSES

FORMAT = "saesteer-strength-predictor"
VERSION = 1
TABLE_FILE, META_FILE = "table.safetensors", "predictor.json"
DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1,
    "max_iter": 100,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 20,
    "l2_regularization": 0.0,
    "max_depth": None,
    "max_features": 1.0,
}


class PredictorMismatchError(ValueError):
    """A saved predictor was trained for other features or another model."""


@dataclass
class StrengthTable:
    """Training rows: X [n, f], y [n] (index into CLASSES), groups [n] (index into group_names)."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    group_names: list[str]
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    model: dict[str, Any] = field(default_factory=dict)  # {"name", "d_model", "n_layers"}

    def __post_init__(self) -> None:
        self.X = np.asarray(self.X, dtype=np.float64)
        self.y = np.asarray(self.y, dtype=np.int64)
        self.groups = np.asarray(self.groups, dtype=np.int64)
        names = feature_names(self.spec)
        if self.X.ndim != 2 or self.X.shape[1] != len(names):
            raise ValueError(
                f"The table's rows have {self.X.shape[1:] or 'no'} features but the feature spec "
                f"{self.spec} has {len(names)}."
            )
        n = self.X.shape[0]
        if n == 0:
            raise ValueError("The table is empty: record some rollouts first.")
        if self.y.shape != (n,) or self.groups.shape != (n,):
            raise ValueError(f"X has {n} rows but y {self.y.shape} and groups {self.groups.shape}.")
        if not np.isfinite(self.X).all():
            raise ValueError("The table holds NaN or infinite features.")
        if self.y.min() < 0 or self.y.max() >= len(CLASSES):
            raise ValueError(f"Labels must index {CLASSES}.")
        if self.groups.min() < 0 or self.groups.max() >= len(self.group_names):
            raise ValueError("Group indices must index group_names.")

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.spec)


class _Fitted:
    """A fitted classifier whose predict_proba always has the 3 CLASSES columns."""

    def __init__(self, X: np.ndarray, y: np.ndarray, params: dict[str, Any], seed: int) -> None:
        present = np.unique(y)
        self.constant = int(present[0]) if present.size == 1 else None
        if self.constant is None:
            from sklearn.ensemble import HistGradientBoostingClassifier

            self.model = HistGradientBoostingClassifier(
                **params, class_weight="balanced", early_stopping=False, random_state=seed
            ).fit(X, y)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((X.shape[0], len(CLASSES)))
        if self.constant is not None:
            out[:, self.constant] = 1.0
            return out
        out[:, self.model.classes_] = self.model.predict_proba(X)
        return out


def _params_fitting(params: dict[str, Any], n_rows: int) -> dict[str, Any]:
    """min_samples_leaf ≤ n/4 so small tables can still split."""
    return {**params, "min_samples_leaf": max(1, min(params["min_samples_leaf"], n_rows // 4))}


def sample_params(n_trials: int, seed: int) -> list[dict[str, Any]]:
    """The defaults, then n_trials − 1 seeded random draws."""
    rng = np.random.default_rng(seed)
    trials = [dict(DEFAULT_PARAMS)]
    for _ in range(max(n_trials, 1) - 1):
        trials.append(
            {
                "learning_rate": float(math.exp(rng.uniform(math.log(0.02), math.log(0.3)))),
                "max_iter": int(rng.choice([50, 100, 200])),
                "max_leaf_nodes": int(rng.choice([7, 15, 31])),
                "min_samples_leaf": int(rng.choice([5, 10, 20, 40])),
                "l2_regularization": float(rng.choice([0.0, 0.01, 0.1, 1.0])),
                "max_depth": [None, 3, 5][int(rng.integers(3))],
                "max_features": float(rng.choice([0.3, 0.5, 1.0])),
            }
        )
    return trials


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in y_true or y_pred."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def grouped_cv(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, params: dict[str, Any], seed: int
) -> tuple[float, np.ndarray]:
    """(macro-F1, out-of-fold probabilities [n, 3]) of leave-one-group-out CV (≥ 2 groups)."""
    proba = np.zeros((len(y), len(CLASSES)))
    for g in np.unique(groups):
        test = groups == g
        fitted = _Fitted(X[~test], y[~test], _params_fitting(params, int((~test).sum())), seed)
        proba[test] = fitted.predict_proba(X[test])
    return macro_f1(y, proba.argmax(1)), proba


def search_params(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, n_trials: int = 10, seed: int = 0
) -> tuple[dict[str, Any], list[dict[str, Any]], np.ndarray | None]:
    """(best hyper-parameters, [{params, cv_macro_f1}] per trial, the best trial's out-of-group
    probabilities); one group: the defaults, no trials, None."""
    if len(np.unique(groups)) < 2:
        return dict(DEFAULT_PARAMS), [], None
    trials, best, best_proba = [], -1.0, None
    for params in sample_params(n_trials, seed):
        score, proba = grouped_cv(X, y, groups, params, seed)
        trials.append({"params": params, "cv_macro_f1": score})
        if score > best:  # first of equals: the defaults win ties
            best, best_proba = score, proba
    chosen = max(trials, key=lambda t: t["cv_macro_f1"])
    return dict(chosen["params"]), trials, best_proba


class StrengthPredictor:
    """A fitted predictor over a `StrengthTable` (module docstring)."""

    def __init__(
        self,
        table: StrengthTable,
        params: dict[str, Any] | None = None,
        seed: int = 0,
        search: list[dict[str, Any]] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.table, self.seed = table, int(seed)
        self.params = dict(params or DEFAULT_PARAMS)
        self.search = list(search or [])
        self.info = dict(info or {})  # free-form: the α grid, methods, label rule it came from
        self._fitted = _Fitted(
            table.X, table.y, _params_fitting(self.params, len(table.y)), self.seed
        )

    @property
    def spec(self) -> FeatureSpec:
        return self.table.spec

    @property
    def n_features(self) -> int:
        return self.table.X.shape[1]

    def predict_proba(self, X: Any) -> np.ndarray:
        """[n, 3] probabilities of CLASSES for feature rows X [n, f]."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"This predictor was trained on {self.n_features} features "
                f"({self.spec}); got rows of {X.shape[1:] or 'no'} features. Compute them with "
                "the predictor's own spec (predictor.spec)."
            )
        return self._fitted.predict_proba(X)

    def check_model(self, d_model: int, n_layers: int, name: str = "") -> None:
        """Refuse a model the table was not recorded on (width, depth, and name when both known)."""
        saved = self.table.model
        if not saved:
            return
        if (saved.get("d_model"), saved.get("n_layers")) != (d_model, n_layers) or (
            name and saved.get("name") and name != saved["name"]
        ):
            raise PredictorMismatchError(
                f"This strength predictor was trained on model {saved.get('name') or '?'} "
                f"(d_model {saved.get('d_model')}, {saved.get('n_layers')} layers), not "
                f"{name or '?'} (d_model {d_model}, {n_layers} layers); train one for this model."
            )

    def save(self, folder: str | Path) -> Path:
        """Write table.safetensors + predictor.json into `folder` (created); returns it."""
        import torch
        from safetensors.torch import save_file

        from saesteer.paths import sha256_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        t = self.table
        save_file(
            {
                "X": torch.from_numpy(np.ascontiguousarray(t.X)),
                "y": torch.from_numpy(np.ascontiguousarray(t.y)),
                "groups": torch.from_numpy(np.ascontiguousarray(t.groups)),
            },
            str(folder / TABLE_FILE),
        )
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "classes": list(CLASSES),
            "feature_names": t.feature_names,
            "spec": t.spec.to_dict(),
            "group_names": list(t.group_names),
            "model": t.model,
            "params": self.params,
            "seed": self.seed,
            "search": self.search,
            "info": self.info,
            "table_sha256": sha256_file(folder / TABLE_FILE),
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder


def load_predictor(folder: str | Path, spec: FeatureSpec | None = None) -> StrengthPredictor:
    """Read a saved predictor and refit it (module docstring). `spec`: refuse another feature set."""
    from safetensors.torch import load_file

    from saesteer.paths import sha256_file

    folder = Path(folder)
    meta_path, table_path = folder / META_FILE, folder / TABLE_FILE
    if not meta_path.is_file() or not table_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a strength-predictor folder (needs {META_FILE} and {TABLE_FILE}); "
            "train one with benchmarks/asteer.py or saesteer.steer.asteer.train_predictor."
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise PredictorMismatchError(
            f"{meta_path} is not a version-{VERSION} {FORMAT} file "
            f"(format {meta.get('format')!r}, version {meta.get('version')!r})."
        )
    if sha256_file(table_path) != meta.get("table_sha256"):
        raise PredictorMismatchError(
            f"{table_path} does not match the checksum in {META_FILE}: the table was changed "
            "or truncated; retrain the predictor."
        )
    saved_spec = FeatureSpec.from_dict(meta["spec"])
    if meta.get("classes") != list(CLASSES) or meta.get("feature_names") != feature_names(
        saved_spec
    ):
        raise PredictorMismatchError(
            f"{folder} was trained on another feature set (its feature names or classes differ "
            "from this saesteer's); retrain it."
        )
    if spec is not None and spec != saved_spec:
        raise PredictorMismatchError(
            f"{folder} was trained on features {saved_spec}, not the asked {spec}."
        )
    tensors = load_file(str(table_path))
    table = StrengthTable(
        tensors["X"].numpy(),
        tensors["y"].numpy(),
        tensors["groups"].numpy(),
        list(meta["group_names"]),
        saved_spec,
        dict(meta.get("model") or {}),
    )
    return StrengthPredictor(
        table, meta["params"], meta["seed"], meta.get("search"), meta.get("info")
    )


def train_predictor(
    table: StrengthTable, n_trials: int = 10, seed: int = 0, info: dict[str, Any] | None = None
) -> StrengthPredictor:
    """Search hyper-parameters by grouped CV on `table`, then fit on all of it."""
    params, trials, _ = search_params(table.X, table.y, table.groups, n_trials, seed)
    return StrengthPredictor(table, params, seed, trials, info)


def subset(table: StrengthTable, keep: np.ndarray) -> StrengthTable:
    """The rows where `keep` (a boolean mask) holds, same groups and spec."""
    return StrengthTable(
        table.X[keep],
        table.y[keep],
        table.groups[keep],
        table.group_names,
        table.spec,
        table.model,
    )


def leave_one_group_out(
    table: StrengthTable, n_trials: int = 10, seed: int = 0, nested: bool = False
) -> dict[str, Any]:
    """Macro-F1 of every behaviour's rows predicted by a classifier fitted without it.

    nested=False (default): one search whose grouped CV *is* leave-one-behaviour-out; the best
    trial's out-of-behaviour predictions are scored (the choice among `n_trials` draws saw every
    behaviour: mildly optimistic; n_trials × #behaviours fits). nested=True: for each behaviour a
    search over the others only (honest; #behaviours times the fits).

    Returns {"per_group": {name: {macro_f1, n}}, "macro_f1": pooled over all held-out rows,
    "mean_macro_f1": mean over behaviours, "proba": [n, 3] out-of-behaviour probabilities,
    "confusion": 3×3 counts (rows true, columns predicted), "params" and "trials" of the search
    (not nested), "nested"}."""
    names = table.group_names
    present = [g for g in range(len(names)) if (table.groups == g).any()]
    if len(present) < 2:
        raise ValueError("Leave-one-behaviour-out needs rows of at least 2 behaviours.")
    extra: dict[str, Any] = {"nested": nested}
    if nested:
        proba = np.zeros((len(table.y), len(CLASSES)))
        params_of = {}
        for g in present:
            held = table.groups == g
            trained = train_predictor(subset(table, ~held), n_trials, seed)
            proba[held] = trained.predict_proba(table.X[held])
            params_of[g] = trained.params
    else:
        params, trials, proba = search_params(table.X, table.y, table.groups, n_trials, seed)
        extra.update(params=params, trials=trials)
        params_of = dict.fromkeys(present, params)
    per: dict[str, Any] = {}
    for g in present:
        held = table.groups == g
        per[names[g]] = {
            "macro_f1": macro_f1(table.y[held], proba[held].argmax(1)),
            "n": int(held.sum()),
            "params": params_of[g],
        }
    pred = proba.argmax(1)
    confusion = np.zeros((3, 3), dtype=int)
    for t, p in zip(table.y, pred, strict=True):
        confusion[t, p] += 1
    return {
        "per_group": per,
        "macro_f1": macro_f1(table.y, pred),
        "mean_macro_f1": float(np.mean([v["macro_f1"] for v in per.values()])),
        "proba": proba,
        "confusion": confusion.tolist(),
        **extra,
    }


def table_from_rows(
    rows: Sequence[dict[str, Any]], spec: FeatureSpec, model: dict[str, Any] | None = None
) -> StrengthTable:
    """A table from rollout records {features, label (a CLASSES name), behaviour}."""
    if not rows:
        raise ValueError("No rollouts to build a table from.")
    groups = sorted({r["behaviour"] for r in rows})
    return StrengthTable(
        np.array([r["features"] for r in rows], dtype=np.float64),
        np.array([CLASSES.index(r["label"]) for r in rows]),
        np.array([groups.index(r["behaviour"]) for r in rows]),
        groups,
        spec,
        dict(model or {}),
    )
