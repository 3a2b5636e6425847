"""ASTEER-style steerability prediction and strength search (after Fcr09/SteerBoost).

Instead of decoding every strength of a grid to find one that steers without breaking the text,
predict from a few cheap steered decode steps whether (code, prompt, α) will be under-steered,
successful, or over-steered, and decode only the most promising strengths.

    features.py   K steered decode steps + an unsteered replay → feature row (`steer_features`)
    labels.py     full rollouts → under / success / over (scorer + perplexity/repetition rule)
    rollouts.py   training rollouts per (behaviour, code, α), resumable storage
    predictor.py  HistGradientBoosting with a grouped random search; save = table + refit on load
    search.py     rank a grid by P(success), decode top candidates; offline search-vs-grid table
    train.py      `train_strength(TrainStrengthConfig)`: `saesteer train-strength`, benchmarks/asteer.py
    auto.py       `generate --alpha auto` (options.py: its torch-free CLI options)
    bench.py      `bench-steer --alphas predicted` (a predictor trained on the other behaviours)

`saesteer generate --steer DIR --alpha auto --strength-model DIR` picks α per prompt with it;
`saesteer train-strength` (or benchmarks/asteer.py) trains and evaluates one on the shipped
behaviours; `saesteer bench-steer --alphas predicted` uses one per held-out behaviour.
"""

from __future__ import annotations

from saesteer.lazy import lazy_exports

_EXPORTS = {
    "FeatureSpec": "features",
    "feature_names": "features",
    "steer_features": "features",
    "CLASSES": "labels",
    "Judge": "labels",
    "LabelRule": "labels",
    "label_of": "labels",
    "rollout": "labels",
    "PredictorMismatchError": "predictor",
    "StrengthPredictor": "predictor",
    "StrengthTable": "predictor",
    "leave_one_group_out": "predictor",
    "load_predictor": "predictor",
    "table_from_rows": "predictor",
    "train_predictor": "predictor",
    "RolloutStore": "rollouts",
    "collect_rollouts": "rollouts",
    "SearchResult": "search",
    "compare_on_table": "search",
    "grid_search": "search",
    "predict_grid": "search",
    "rank_grid": "search",
    "search_strength": "search",
    "choose_alphas": "auto",
    "generate_auto": "auto",
    "load_strength_model": "auto",
    "TrainStrengthConfig": "train",
    "train_strength": "train",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
