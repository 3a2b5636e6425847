"""`train_strength(config)`: rollouts on the shipped behaviours → held-out F1, search vs grid, predictor.

For each behaviour b and method m (bench-steer method specs, default mean-diff, fitted on b's train
split), on b's held-out prompts (`held_out_prompts`, never trained on) and every α of the grid:

    rollouts   features (K steered steps + replay) and a full greedy rollout of N tokens labelled
               under / success / over (`saesteer.steer.asteer.labels`)
    F1         leave-one-behaviour-out macro-F1: a random search of `trials` draws whose folds each
               hold out one behaviour, the best draw's out-of-behaviour predictions scored per
               behaviour and pooled (`nested`: a separate search per held-out behaviour)
    search     with those out-of-behaviour P(success): rank the grid per item, decode the top
               candidates until one succeeds (search@1/2/3, the paper's), and with monotone
               pruning (search@3 / uncapped), against decoding the whole grid (grid = per-item
               oracle success), predictor-free ascending sweeps (plain and pruned) and bisection,
               the best fixed α (chosen knowing every label) and the oracle's single decode
               (`search.compare_on_table`); decoded tokens count the K feature steps of every grid
               α plus every full decode

A final predictor trained on every behaviour is saved in OUT/predictor (`saesteer generate --steer
DIR --alpha auto --strength-model OUT/predictor`; `install` also copies it to the default place).
Rollouts are stored in OUT/rollouts/ per (behaviour, method, α), codes in OUT/codes/: rerun the
same command to continue a killed run. OUT/results.json and OUT/results.md hold the tables.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saesteer.config import check_at_least, option

BEHAVIOURS = ["sentiment", "formality", "topic-ocean", "topic-food", "style-enthusiastic"]


@dataclass
class TrainStrengthConfig:
    """What `saesteer train-strength` / benchmarks/asteer.py record, fit and report."""

    out: str = option(help="output folder: predictor/, rollouts/, codes/, results.json/.md")
    behaviours: list[str] = option(BEHAVIOURS, "shipped behaviours (≥ 2: held out one at a time)")  # noqa: RUF009
    methods: list[str] = option(["mean-diff"], "bench-steer method specs (e.g. mean-diff, bipo)")  # noqa: RUF009
    model: str = option("smollm2-135m-instruct", "model name or local folder")
    sae: str = option("", "SAE for yapo methods")
    alphas: str = option("0.5,1,2,3,4,6,8,12", "the α grid")
    n_prompts: int = option(12, "held-out prompts per behaviour (0: all)")
    max_new_tokens: int = option(40, "tokens of a full rollout")
    k_steps: int = option(5, "steered decode steps of the features")
    trials: int = option(10, "hyper-parameter draws per search")
    nested: bool = option(
        False,
        "nested held-out F1: a search per held-out behaviour over the others (#behaviours × the "
        "fits); default one leave-one-behaviour-out search, its best trial scored",
    )
    budget: float = option(2.0, "label over when perplexity > budget × unsteered")
    max_repetition: float = option(0.5, "label over when 3-gram repetition exceeds this")
    seed: int = option(0, "seed of the search and the classifier")
    threads: int = option(2, "torch CPU threads (0: torch's default)")
    device: str = option("cpu", "torch device")
    install: bool = option(False, "copy the predictor to the default location of --alpha auto")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        from saesteer.steer.asteer.labels import LabelRule
        from saesteer.steer.asteer.options import parse_grid
        from saesteer.steer.behaviours import behaviour

        check_at_least(self, ("max_new_tokens", "k_steps", "trials"), 1)
        check_at_least(self, ("n_prompts", "threads"), 0)
        if len(set(self.behaviours)) < 2:
            raise ValueError(
                "Give at least 2 behaviours: the predictor is scored on held-out ones."
            )
        for name in self.behaviours:
            behaviour(name)
        if not self.methods:
            raise ValueError("Give at least one method.")
        if not parse_grid(self.alphas, "--alphas"):
            raise ValueError("--alphas is empty; give a grid such as 0.5,1,2,4,8.")
        LabelRule(self.budget, self.max_repetition)


def _fitted_code(spec: Any, behaviour: str, context: dict[str, Any], folder: Path) -> Any:
    """The method's code for the behaviour, fitted once and read back from `folder`."""
    from saesteer.bench.methods import fit_method
    from saesteer.steer.io import META_FILE, load_code, save_code

    if not (folder / META_FILE).is_file():
        code = fit_method(spec, behaviour, 0, context)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_code(code, tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return load_code(folder, sae=context["sae"])


def train_strength(config: TrainStrengthConfig, model: Any = None, tokenizer: Any = None) -> dict:
    """Run the module docstring's steps; returns the report (also OUT/results.json).

    `model`, `tokenizer`: an already loaded HookedTransformer of `config.model` (else loaded)."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from saesteer.bench.evaluate import held_out_prompts
    from saesteer.bench.methods import parse_method
    from saesteer.bench.store import slug
    from saesteer.models import has_hf_weights, load_hf_model, load_model
    from saesteer.steer.asteer.auto import default_predictor_dir
    from saesteer.steer.asteer.features import FeatureSpec
    from saesteer.steer.asteer.labels import CLASSES, SUCCESS, LabelRule
    from saesteer.steer.asteer.options import parse_grid
    from saesteer.steer.asteer.predictor import (
        StrengthPredictor,
        leave_one_group_out,
        table_from_rows,
        train_predictor,
    )
    from saesteer.steer.asteer.rollouts import RolloutStore, collect_rollouts
    from saesteer.steer.asteer.search import compare_on_table
    from saesteer.steer.io import model_facts

    started = time.time()
    out = Path(config.out)
    if config.threads:
        torch.set_num_threads(config.threads)
    specs = [parse_method(m) for m in config.methods]
    grid = parse_grid(config.alphas, "--alphas") or []
    fspec = FeatureSpec(k_steps=config.k_steps)
    rule = LabelRule(config.budget, config.max_repetition)
    sae = None
    if config.sae:
        from saesteer.sae.io import load_sae

        sae = load_sae(config.sae, config.device).requires_grad_(False)
    if model is None:
        model, tokenizer = load_model(config.model, config.device)
    generator = (
        load_hf_model(config.model, config.device) if has_hf_weights(config.model) else model
    )
    common = {"model": config.model, "sae": config.sae or None}
    context = {"model": model, "tokenizer": tokenizer, "sae": sae, "common": common}
    store = RolloutStore(out / "rollouts")
    behaviours = list(dict.fromkeys(config.behaviours))
    bar = tqdm(
        total=len(behaviours) * len(specs) * len(grid),
        desc="train-strength",
        unit="cell",
        disable=not config.progress,
    )
    rows: list[dict[str, Any]] = []
    seconds = {"fit": 0.0, "rollouts": 0.0}
    for name in behaviours:
        prompts = held_out_prompts(name, config.n_prompts)
        for spec in specs:
            t0 = time.time()
            code = _fitted_code(spec, name, context, out / "codes" / name / slug(spec.name))
            seconds["fit"] += time.time() - t0
            t0 = time.time()
            rows += collect_rollouts(
                generator, tokenizer, code, name, spec.name, prompts, grid, fspec,
                config.max_new_tokens, rule, store, bar,
            )  # fmt: skip
            seconds["rollouts"] += time.time() - t0
    bar.close()
    _, d_model, n_layers = model_facts(generator)
    table = table_from_rows(
        rows, fspec, {"name": config.model, "d_model": d_model, "n_layers": n_layers}
    )

    t0 = time.time()
    lobo = leave_one_group_out(table, config.trials, config.seed, config.nested)
    seconds["lobo"] = time.time() - t0
    p_success = lobo["proba"][:, SUCCESS]
    searches: dict[str, dict] = {}
    pooled: dict[str, list] = {"p": [], "labels": [], "tokens": []}
    for name in behaviours:
        for spec in specs:
            where = {
                (r["prompt"], r["alpha"]): i
                for i, r in enumerate(rows)
                if r["behaviour"] == name and r["method"] == spec.name
            }
            prompts = list(dict.fromkeys(x for x, _ in where))
            at = np.array([[where[(x, a)] for a in grid] for x in prompts])
            p = p_success[at]
            labels = table.y[at]
            tokens = np.array([[rows[i]["tokens"] for i in line] for line in at])
            searches[f"{name} / {spec.name}"] = compare_on_table(
                p, labels, tokens, grid, fspec.k_steps
            )
            for key, value in (("p", p), ("labels", labels), ("tokens", tokens)):
                pooled[key].append(value)
    searches["all"] = compare_on_table(
        *(np.concatenate(pooled[k]) for k in ("p", "labels", "tokens")), grid, fspec.k_steps
    )

    t0 = time.time()
    info = {
        "grid": grid,
        "methods": [s.name for s in specs],
        "behaviours": behaviours,
        "budget": rule.budget,
        "max_repetition": rule.max_repetition,
        "max_new_tokens": config.max_new_tokens,
        "n_prompts": config.n_prompts,
    }
    if config.nested:
        final = train_predictor(table, config.trials, config.seed, info)
    else:  # the leave-one-behaviour-out search already chose the hyper-parameters
        final = StrengthPredictor(table, lobo["params"], config.seed, lobo["trials"], info)
    folder = final.save(out / "predictor")
    seconds["final_fit"] = time.time() - t0
    if config.install:
        target = default_predictor_dir()
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folder, target)
    counts = {
        name: {c: int(((table.groups == g) & (table.y == k)).sum()) for k, c in enumerate(CLASSES)}
        for g, name in enumerate(table.group_names)
    }
    seconds["wall"] = time.time() - started
    from saesteer.config import config_to_dict

    report = {
        "config": config_to_dict(config),
        "labels": counts,
        "lobo": {k: v for k, v in lobo.items() if k not in ("proba", "trials")},
        "search_trials": lobo.get("trials"),
        "search": searches,
        "final_params": final.params,
        "predictor": str(folder),
        "seconds": seconds,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown(report) + "\n")
    return report


def markdown(report: dict[str, Any]) -> str:
    """The labels, held-out-behaviour macro-F1 and search-vs-grid tables as Markdown."""
    lobo, per = report["lobo"], report["lobo"]["per_group"]
    lines = ["| behaviour | under | success | over | held-out macro-F1 |", "|---|---|---|---|---|"]
    for name, c in report["labels"].items():
        f1 = per.get(name, {}).get("macro_f1", float("nan"))
        lines.append(f"| {name} | {c['under']} | {c['success']} | {c['over']} | {f1:.3f} |")
    lines += [
        "",
        f"pooled held-out macro-F1 {lobo['macro_f1']:.3f} · mean over behaviours "
        f"{lobo['mean_macro_f1']:.3f}; confusion (rows true under/success/over, columns "
        f"predicted) {json.dumps(lobo['confusion'])}",
        "",
        "| items | policy | success | decoded tokens | tokens / item | full decodes |",
        "|---|---|---|---|---|---|",
    ]
    for items, table in report["search"].items():
        for policy, e in table.items():
            label = policy + (f" (α={e['alpha']:g})" if "alpha" in e else "")
            lines.append(
                f"| {items} | {label} | {e['success_rate']:.3f} | {e['tokens']:.0f} | "
                f"{e['tokens_per_item']:.1f} | {e['decodes']:.0f} |"
            )
    lines.append("\nseconds: " + " · ".join(f"{k} {v:.0f}" for k, v in report["seconds"].items()))
    return "\n".join(lines)
