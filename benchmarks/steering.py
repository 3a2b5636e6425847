"""Steering benchmark of every method, plus the YaPO diagnostics, on the default model.

The grid itself is `saesteer bench-steer` (`saesteer.bench`): each method fitted on a behaviour's
train split, steered on held-out prompts at automatically searched strengths, read at the
perplexity budget (results.json, report.html and PNGs in --out; rerun to continue a killed run).
This script then adds what only a sparse code has, from the codes the grid saved in OUT/codes/:

    support       latents in each YaPO code, and the Jaccard overlap of supports across seeds
    cos² to dense cos² between the code's mean edit Δ̄ = mean_t (h'_t − h_t) over the train
                  pairs' completion tokens and the mean-diff (and same-seed BiPO) direction
    k-latent fit  cos² of the best k-latent OMP fit (`saesteer.steer.sparse_support.sparse_fit`) of
                  the mean-diff direction on each SAE (--sae and --diag-saes): how far any k-latent
                  code of that dictionary can follow the dense direction
    loss curves   the training loss per optimizer step of every BiPO / YaPO code, one line per seed
                  (OUT/loss_BEHAVIOUR.png; the YaPO paper's faster-convergence claim)

    .venv/bin/python benchmarks/steering.py --out runs/bench_default                # ~1.5 h, 2 cores
    .venv/bin/python benchmarks/steering.py --out runs/bench_seeds --seeds 3 --capability none \
        --behaviours formality,topic-food,style-enthusiastic --methods mean-diff,bipo,yapo,yapo-reference
    .venv/bin/python benchmarks/steering.py --behaviours sentiment --seeds 1 --out runs/b1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from saesteer.bench import BenchSteerConfig, run_bench
from saesteer.bench.store import BenchStore

METHODS = ("mean-diff", "bipo", "yapo", "yapo-reference", "yapo-refit", "sparse-mean-diff")
BEHAVIOURS = ("sentiment", "formality", "topic-ocean", "topic-food", "style-enthusiastic")
SPARSE = ("yapo", "yapo-reference", "yapo-refit", "sparse-mean-diff")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench_default"))
    p.add_argument("--behaviours", default=",".join(BEHAVIOURS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=0, help="0: train-steer's default (4)")
    p.add_argument("--n-prompts", type=int, default=16)
    p.add_argument("--auto-max-probes", type=int, default=5)
    p.add_argument("--capability", default="best", choices=("best", "all", "none"))
    p.add_argument("--sae", default=BenchSteerConfig.sae)
    p.add_argument("--diag-saes", default="", help="comma-separated SAEs for the k-latent fit")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def cos2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0) ** 2)


def diagnostics(model, tokenizer, sae, store: BenchStore, name: str, seeds: int, fit_saes) -> dict:
    """The module docstring's numbers for one behaviour, from the saved codes."""
    from saesteer.hook_names import start_layer
    from saesteer.sae.io import load_sae
    from saesteer.steer.batching import tokenize_pairs
    from saesteer.steer.behaviours import behaviour, training_data
    from saesteer.steer.io import META_FILE, load_code
    from saesteer.steer.sparse_support import sparse_fit
    from saesteer.steer.train import _cache_split

    def codes(method):
        folders = [store.code_dir(name, method, s) for s in range(seeds)]
        return [load_code(f, sae=sae) for f in folders if (f / META_FILE).is_file()]

    train, _ = training_data(name)
    tokens = tokenize_pairs(tokenizer, train, behaviour(name).chat)
    split = _cache_split(model, tokens, start_layer(sae.cfg.hook_name), "cpu")
    h = split.resid[split.tokens.target_mask > 0]
    dense = {m: [c.vector for c in codes(m)] for m in ("mean-diff", "bipo")}
    out: dict = {}
    for method in SPARSE:
        found = codes(method)
        if not found:
            continue
        supports = [set(c.support.tolist()) for c in found]
        pairs = [(a, b) for i, a in enumerate(supports) for b in supports[i + 1 :]]
        edits = [(c.apply(h, 1.0) - h).mean(0) for c in found]
        out[method] = {
            "support": [len(s) for s in supports],
            "jaccard": [len(a & b) / len(a | b) for a, b in pairs],
            **{
                f"cos2_to_{m}": [cos2(e, vs[i % len(vs)]) for i, e in enumerate(edits)]
                for m, vs in dense.items()
                if vs
            },
        }
    if dense["mean-diff"]:
        direction = dense["mean-diff"][0]
        out["k_latent_fit_cos2_to_mean_diff"] = {
            spec: {
                k: sparse_fit(direction, load_sae(spec).W_dec.detach(), k).cos2
                for k in (8, 32, 64, 256)
            }
            for spec in fit_saes
        }
    return out


def plot_loss_curves(store: BenchStore, name: str, seeds: int, path: Path) -> dict:
    """Loss per step of the BiPO / YaPO codes of one behaviour (one line per seed) → PNG; returns
    {method: [[loss per step] per seed]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict = {}
    for method in ("bipo", "yapo", "yapo-reference"):
        for seed in range(seeds):
            meta_file = store.code_dir(name, method, seed) / "code.json"
            if meta_file.is_file():
                steps = json.loads(meta_file.read_text())["meta"].get("loss_curve") or []
                if steps:  # [{step, phase, loss}], phases in order (yapo refit: dense, then refit)
                    curves.setdefault(method, []).append([row["loss"] for row in steps])
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for (method, runs), colour in zip(curves.items(), ("C0", "C1", "C2"), strict=False):
            for seed, curve in enumerate(runs):
                ax.plot(curve, color=colour, alpha=0.8, label=method if seed == 0 else None)
        ax.set(xlabel="optimizer step", ylabel="training loss", yscale="log", title=name)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return curves


def main() -> None:
    args = parse_args()
    config = BenchSteerConfig(
        out=str(args.out),
        behaviours=args.behaviours.split(","),
        methods=args.methods.split(","),
        seeds=args.seeds,
        epochs=args.epochs,
        n_prompts=args.n_prompts,
        sae=args.sae,
        auto_max_probes=args.auto_max_probes,
        capability=args.capability,
        threads=args.threads,
    )
    result = run_bench(config)
    from saesteer.models import load_model
    from saesteer.sae.io import load_sae

    model, tokenizer = load_model(config.model)
    sae = load_sae(config.sae).requires_grad_(False)
    fit_saes = [config.sae, *filter(None, args.diag_saes.split(","))]
    store = BenchStore(config.out)
    report = {
        name: diagnostics(model, tokenizer, sae, store, name, config.seeds, fit_saes)
        for name in config.behaviours
    }
    for name in config.behaviours:
        curves = plot_loss_curves(store, name, config.seeds, args.out / f"loss_{name}.png")
        report[name]["loss_curves"] = curves
    store.write_json("diagnostics.json", report)
    print(json.dumps(report, indent=1, default=lambda x: round(x, 3)))
    print(f"report {result.html}")


if __name__ == "__main__":
    main()
