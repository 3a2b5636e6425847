"""Steering benchmark: success against coherence for each method, on held-out prompts, over seeds.

For each behaviour and training seed, the methods are fitted on the behaviour's train split
(`mean-diff` once: it has no seed), then each code steers greedy generations from held-out prompts
at every strength α of `--alphas` (α = 1 is the strength every method was trained at). Per point:

    success   fraction of generations the behaviour's scorer accepts (`saesteer.steer.behaviours`)
    ppl       exp(−mean log p_0(token)) of the generated tokens under the unsteered model p_0
    kl        mean_t KL(p_0 ‖ p_α) of next-token distributions over the tokens of neutral prompts
    distinct2 distinct bigrams / bigrams over all generations of the point (repetition: low)

Read at equal coherence, as users choose a method: `success@budget` is the success interpolated
along each seed's α curve (α = 0 included) where ppl crosses budget × the unsteered ppl (the last
point when it never does, marked ≥), averaged over seeds; `best α` is the grid point with the most
success among those within the budget, with a 95 % bootstrap interval over (seed, prompt).

YaPO diagnostics: support sizes; the Jaccard overlap of supports across seeds; cos² between the
code's mean edit Δ̄ = mean_t (h'_t − h_t) and the mean-diff and BiPO directions; and cos² of the
best k-latent fit (OMP, `saesteer.steer.sparse_support.sparse_fit`) to the mean-diff direction on
each `--diag-saes` SAE: how far any k-latent code of that dictionary can follow the dense direction.

    .venv/bin/python benchmarks/steering.py --out runs/steer_bench        # everything (~1 h, 2 cores)
    .venv/bin/python benchmarks/steering.py --behaviours sentiment --seeds 1 --alphas 1,2
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import time
from pathlib import Path

import torch

from saesteer.audit.config import NEUTRAL_PROMPTS
from saesteer.audit.metrics import next_token_kl
from saesteer.steer.behaviours import behaviour, training_data
from saesteer.steer.codes import LatentCode
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.generate import batch_prompt_ids, generate_ids_steered
from saesteer.steer.hooks import steer
from saesteer.steer.sparse_support import mean_edit, sparse_fit
from saesteer.steer.train import _cache_split, fit_steering, start_layer

# Held-out prompts: in no shipped training or validation file.
CHAT_PROMPTS = (
    "What should I do this evening?",
    "Tell me about your day.",
    "Can you describe a place you like?",
    "What is a good way to spend a Sunday?",
    "Write a short note to a friend.",
    "What do you think about mornings?",
    "Describe the view from a window.",
    "What would you pack for a short trip?",
    "How do you relax after work?",
    "Tell me something about your neighbourhood.",
    "What is your favourite season and why?",
    "Describe a memorable afternoon.",
    "What are your plans for the holidays?",
    "Give me an idea for a weekend project.",
    "What did you learn this week?",
    "Describe your ideal home.",
    "How would you welcome a new colleague?",
    "What makes a good day?",
    "Tell me about a hobby.",
    "What would you say to someone who feels bored?",
)
STORY_PROMPTS = (
    "The meeting had barely started when",
    "After the long drive home, she",
    "The old house at the end of the street",
    "When the letter finally arrived, he",
    "The last day of the summer camp",
    "As the train pulled into the station, we",
    "My first week at the new job",
    "The neighbours were talking about the",
)
# yapo-refit: dense → 32 latents by effect → refit; yapo-md: the 32-latent OMP fit of the
# mean difference → preference training on that support (TrainSteerConfig.support_by).
# sparse-mean-diff: that OMP fit itself, untrained (= train-steer --method yapo --support-by
# mean-diff --lr 0, as tests/test_steer_yapo_modes.py checks).
METHODS = ("mean-diff", "bipo", "yapo-reference", "yapo-refit", "yapo-md", "sparse-mean-diff")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--sae", default="pretrained:smollm2-l15-topk-8x-k64")
    p.add_argument("--diag-saes", default="", help="comma-separated SAEs for the k-latent fit")
    p.add_argument("--behaviours", default="sentiment,topic-food,style-enthusiastic")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--alphas", default="0.5,1,2,3,4")
    p.add_argument("--epochs", type=int, default=TrainSteerConfig.epochs)
    p.add_argument("--refit-epochs", type=int, default=TrainSteerConfig.refit_epochs)
    p.add_argument("--lr", type=float, default=TrainSteerConfig.lr)
    p.add_argument("--top-k", type=int, default=TrainSteerConfig.top_k)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--n-prompts", type=int, default=0, help="held-out prompts used (0: all)")
    p.add_argument("--budget", type=float, default=2.0, help="ppl budget × unsteered")
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/steer_bench"))
    return p.parse_args()


def eval_prompts(name: str, n: int = 0) -> list[str]:
    """Held-out prompts for a behaviour: its validation prompts, then the shared held-out list
    (the first n; 0: all)."""
    chosen = behaviour(name)
    _, val = training_data(name)
    extra = CHAT_PROMPTS if chosen.chat else STORY_PROMPTS
    prompts = list(dict.fromkeys([p.prompt for p in val] + list(extra)))
    return prompts[: n or None]


class Scorer:
    """Generates, scores and measures coherence and drift with the HF model (module docstring)."""

    def __init__(self, hf, tokenizer, name: str, max_new_tokens: int, n_prompts: int = 0) -> None:
        self.hf, self.tokenizer, self.name = hf, tokenizer, name
        self.behaviour = behaviour(name)
        self.prompts = eval_prompts(name, n_prompts)
        self.ids, self.mask = batch_prompt_ids(tokenizer, self.prompts, chat=self.behaviour.chat)
        self.max_new_tokens = max_new_tokens
        self.neutral_ids, self.neutral_mask = batch_prompt_ids(tokenizer, list(NEUTRAL_PROMPTS))
        self.neutral_logits = self._neutral_logits(None, 0.0)

    @torch.inference_mode()
    def _neutral_logits(self, code, alpha: float) -> torch.Tensor:
        with steer(self.hf, code, alpha) if code is not None else torch.no_grad():
            return self._logits(self.neutral_ids, self.neutral_mask)

    def _logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits of left-padded rows, positions counted from each row's first real token."""
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        return self.hf(ids, attention_mask=mask, position_ids=positions).logits

    @torch.inference_mode()
    def point(self, code, alpha: float) -> dict:
        """One (code, α) point: per-prompt successes and NLLs, ppl, KL, distinct-2, texts."""
        started = time.time()
        eos = self.tokenizer.eos_token_id
        new = generate_ids_steered(
            self.hf,
            self.ids,
            self.mask,
            code,
            alpha,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=eos,
        )
        texts = [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in new]
        gen_seconds = time.time() - started
        valid = (new != eos).long()  # generated tokens before EOS padding
        valid = valid * (valid.cumprod(1))
        full = torch.cat([self.ids, new], 1)
        attention = torch.cat([self.mask, valid], 1)
        logp = torch.log_softmax(self._logits(full, attention)[:, :-1].double(), -1)
        token_logp = logp.gather(-1, full[:, 1:, None])[..., 0][:, self.ids.shape[1] - 1 :]
        nll = -(token_logp * valid).sum(1)
        counts = valid.sum(1)
        bigrams = [
            tuple(r[i : i + 2])
            for r in (row[row != eos].tolist() for row in new)
            for i in range(len(r) - 1)
        ]
        kl = (
            0.0
            if code is None or alpha == 0
            else next_token_kl(
                self.neutral_logits, self._neutral_logits(code, alpha), self.neutral_mask
            )
        )
        return {
            "alpha": alpha,
            "success": [float(self.behaviour.succeeded(t)) for t in texts],
            "nll": nll.tolist(),
            "tokens": counts.tolist(),
            "ppl": math.exp(nll.sum().item() / max(counts.sum().item(), 1)),
            "kl": kl,
            "distinct2": len(set(bigrams)) / max(len(bigrams), 1),
            "texts": texts,
            "seconds": {"generation": gen_seconds, "scoring": time.time() - started - gen_seconds},
        }


def success_at_budget(curve: list[dict], limit: float) -> tuple[float, bool]:
    """Success interpolated where ppl first reaches `limit` along α (curve sorted, α = 0 first);
    (value, reached): reached False means the last point is still within the budget."""
    for a, b in itertools.pairwise(curve):
        sa, sb = sum(a["success"]) / len(a["success"]), sum(b["success"]) / len(b["success"])
        if b["ppl"] >= limit:
            t = (limit - a["ppl"]) / (b["ppl"] - a["ppl"]) if b["ppl"] > a["ppl"] else 0.0
            return sa + min(max(t, 0.0), 1.0) * (sb - sa), True
    last = curve[-1]
    return sum(last["success"]) / len(last["success"]), False


def bootstrap(values: list[list[float]], n: int, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean of values[seed][prompt], resampling seeds and prompts."""
    rng = random.Random(seed)
    means = []
    for _ in range(n):
        seeds = [values[rng.randrange(len(values))] for _ in values]
        means.append(sum(sum(rng.choice(s) for _ in s) / len(s) for s in seeds) / len(seeds))
    means.sort()
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def cos2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0) ** 2)


def fit_codes(model, tokenizer, sae, name: str, method: str, seed: int, args) -> tuple[dict, dict]:
    """{method name: code} for one seed (yapo-refit also gives yapo-reference), and curves."""
    chosen = behaviour(name)
    train, val = training_data(name)
    base = TrainSteerConfig(
        pairs=name,
        chat=chosen.chat,
        epochs=args.epochs,
        refit_epochs=args.refit_epochs,
        lr=args.lr,
        top_k=args.top_k,
        seed=seed,
        progress=False,
    )
    if method == "sparse-mean-diff":
        config = TrainSteerConfig(**{**vars(base), "method": "mean-diff"})
        dense = fit_steering(model, tokenizer, train, config, sae=sae).code.vector
        fit = sparse_fit(dense, sae.W_dec.detach(), args.top_k)
        values = torch.zeros(sae.cfg.d_sae)
        values[fit.support] = fit.coefficients
        meta = {"mean_diff_fit_cos2": fit.cos2, "val_accuracy": None}
        return {method: LatentCode(sae, values, method="yapo", meta=meta)}, {method: []}
    if method in ("mean-diff", "bipo", "yapo-md"):
        extra = {"method": "yapo", "support_by": "mean-diff"} if method == "yapo-md" else {}
        config = TrainSteerConfig(**{**vars(base), "method": method, **extra})
        result = fit_steering(model, tokenizer, train, config, sae=sae, val_pairs=val)
        return {method: result.code}, {method: result.code.meta.get("loss_curve", [])}
    config = TrainSteerConfig(
        **{**vars(base), "method": "yapo", "yapo_mode": "refit", "support_by": "effect"}
    )
    result = fit_steering(model, tokenizer, train, config, sae=sae, val_pairs=val)
    meta = {**result.code.meta, "support_size": int((result.dense_values != 0).sum())}
    reference = LatentCode(sae, result.dense_values, method="yapo", meta=meta)
    curve = result.code.meta["loss_curve"]
    return (
        {"yapo-refit": result.code, "yapo-reference": reference},
        {"yapo-refit": curve, "yapo-reference": [s for s in curve if s["phase"] != "yapo refit"]},
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from saesteer.models import load_hf_model, load_model
    from saesteer.sae.io import load_sae

    started = time.time()
    model, tokenizer = load_model(args.model, "cpu")
    hf = load_hf_model(args.model, "cpu")
    sae = load_sae(args.sae).requires_grad_(False)
    alphas = [float(a) for a in args.alphas.split(",")]
    methods = args.methods.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = {"fit": 0.0, "generation": 0.0, "scoring": 0.0}
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "behaviours": {}}
    for name in args.behaviours.split(","):
        scorer = Scorer(hf, tokenizer, name, args.max_new_tokens, args.n_prompts)
        base = scorer.point(None, 0.0)
        seconds["generation"] += base["seconds"]["generation"]
        entry = {"unsteered": base, "methods": {}, "curves": {}, "diagnostics": {}}
        codes: dict[str, list] = {}
        for method in [m for m in methods if m != "yapo-reference"]:
            for seed in range(1 if method.endswith("mean-diff") else args.seeds):
                t0 = time.time()
                fitted, curves = fit_codes(model, tokenizer, sae, name, method, seed, args)
                seconds["fit"] += time.time() - t0
                for key, code in fitted.items():
                    if key in methods:
                        codes.setdefault(key, []).append(code)
                        entry["curves"].setdefault(key, []).append(curves[key])
        for method, seeded in codes.items():
            rows = []
            for code in seeded:
                points = [scorer.point(code, a) for a in alphas]
                for p in points:
                    for part in ("generation", "scoring"):
                        seconds[part] += p["seconds"][part]
                rows.append(points)
                print(
                    f"{name} {method}: "
                    + ", ".join(
                        f"α {p['alpha']:g} s {sum(p['success']) / len(p['success']):.2f} ppl {p['ppl']:.1f}"
                        for p in points
                    ),
                    flush=True,
                )
            entry["methods"][method] = {
                "points": rows,
                "summary": summarise(rows, base, args),
                "support": [getattr(c, "support_size", None) for c in seeded],
                "val_accuracy": [c.meta.get("val_accuracy") for c in seeded],
            }
        entry["diagnostics"] = diagnostics(model, tokenizer, name, codes, sae, args)
        report["behaviours"][name] = entry
        save(report, args.out)
    report["seconds"] = {**seconds, "total": time.time() - started}
    save(report, args.out)
    plots(report, args)
    print_tables(report, args)


def summarise(rows: list[list[dict]], base: dict, args) -> dict:
    limit = args.budget * base["ppl"]
    at_budget = [success_at_budget([base, *points], limit) for points in rows]
    n_alphas = len(rows[0])
    ok = [i for i in range(n_alphas) if all(r[i]["ppl"] <= limit for r in rows)]
    mean_success = [
        sum(sum(r[i]["success"]) / len(r[i]["success"]) for r in rows) / len(rows)
        for i in range(n_alphas)
    ]
    best = max(ok, key=lambda i: mean_success[i]) if ok else None
    one = next((i for i in range(n_alphas) if rows[0][i]["alpha"] == 1.0), None)

    def at(i):
        if i is None:
            return None
        lo, hi = bootstrap([r[i]["success"] for r in rows], args.boot)
        return {
            "alpha": rows[0][i]["alpha"],
            "success": mean_success[i],
            "ci": [lo, hi],
            "ppl": sum(r[i]["ppl"] for r in rows) / len(rows),
            "kl": sum(r[i]["kl"] for r in rows) / len(rows),
            "distinct2": sum(r[i]["distinct2"] for r in rows) / len(rows),
        }

    return {
        "success_at_budget": sum(v for v, _ in at_budget) / len(at_budget),
        "success_at_budget_reached": all(r for _, r in at_budget),
        "success_at_budget_per_seed": [v for v, _ in at_budget],
        "best_within_budget": at(best),
        "at_alpha_1": at(one),
    }


def diagnostics(model, tokenizer, name: str, codes: dict, sae, args) -> dict:
    """Support overlap across seeds, cos² of mean edits to the dense directions, k-latent fits."""
    chosen = behaviour(name)
    train, _ = training_data(name)
    from saesteer.steer.batching import tokenize_pairs

    split = _cache_split(
        model, tokenize_pairs(tokenizer, train, chosen.chat), start_layer(sae.cfg.hook_name), "cpu"
    )
    h = split.resid[split.tokens.target_mask > 0]
    dense = {m: [c.vector for c in codes[m]] for m in ("mean-diff", "bipo") if m in codes}
    out: dict = {}
    for method in ("yapo-refit", "yapo-md", "sparse-mean-diff", "yapo-reference"):
        if method not in codes:
            continue
        supports = [set(c.support.tolist()) for c in codes[method]]
        pairs = [(a, b) for i, a in enumerate(supports) for b in supports[i + 1 :]]
        edits = [(c.apply(h, 1.0) - h).mean(0) for c in codes[method]]
        out[method] = {
            "support": [len(s) for s in supports],
            "jaccard": [len(a & b) / len(a | b) for a, b in pairs],
            **{
                f"cos2_to_{m}": [cos2(e, vs[i % len(vs)]) for i, e in enumerate(edits)]
                for m, vs in dense.items()
            },
        }
    if "mean-diff" in dense:
        direction = dense["mean-diff"][0]
        fits = {}
        for spec in [args.sae, *filter(None, args.diag_saes.split(","))]:
            from saesteer.sae.io import load_sae

            try:
                other = load_sae(spec)
            except (OSError, ValueError) as error:  # e.g. still training: say so, go on
                fits[spec] = {"error": str(error)}
                continue
            if other.cfg.hook_name != sae.cfg.hook_name:
                continue
            fits[spec] = {
                k: sparse_fit(direction, other.W_dec.detach(), k).cos2 for k in (8, 32, 64, 256)
            }
        out["k_latent_fit_cos2_to_mean_diff"] = fits
        if "yapo-reference" in codes:
            v = codes["yapo-reference"][0]
            out["reference_mean_edit_cos2_to_mean_diff"] = cos2(
                mean_edit(sae, h, _full_values(v, sae)), direction
            )
    return out


def _full_values(code, sae) -> torch.Tensor:
    values = torch.zeros(sae.cfg.d_sae)
    values[code.support] = code.values
    return values


def save(report: dict, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(report, indent=1, default=float))


def plots(report: dict, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, entry in report["behaviours"].items():
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        base = entry["unsteered"]
        for method, data in entry["methods"].items():
            rows = data["points"]
            ppl = [sum(r[i]["ppl"] for r in rows) / len(rows) for i in range(len(rows[0]))]
            succ = [
                sum(sum(r[i]["success"]) / len(r[i]["success"]) for r in rows) / len(rows)
                for i in range(len(rows[0]))
            ]
            kl = [sum(r[i]["kl"] for r in rows) / len(rows) for i in range(len(rows[0]))]
            ax.plot(
                [base["ppl"], *ppl],
                [sum(base["success"]) / len(base["success"]), *succ],
                "o-",
                label=method,
            )
            ax2.plot(
                [0.0, *kl], [sum(base["success"]) / len(base["success"]), *succ], "o-", label=method
            )
        ax.axvline(args.budget * base["ppl"], color="grey", ls="--", lw=1)
        ax.set(
            xscale="log",
            xlabel="perplexity under the unsteered model",
            ylabel="success rate",
            title=name,
        )
        ax2.set(xlabel="KL drift on neutral prompts (nats/token)", ylabel="success rate")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.out / f"frontier_{name}.png", dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(6, 4))
        for method in ("bipo", "yapo-reference", "yapo-md"):
            for curve in entry["curves"].get(method, [])[:1]:
                ax.plot([s["step"] for s in curve], [s["loss"] for s in curve], label=method, lw=1)
        ax.set(
            xlabel="optimizer step",
            ylabel="preference loss",
            title=f"{name}: training loss (seed 0)",
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out / f"loss_{name}.png", dpi=110)
        plt.close(fig)


def print_tables(report: dict, args) -> None:
    print(
        f"\n| behaviour | method | support | val acc | α = 1: success (ppl) | best α ≤ {args.budget:g}× ppl: success [95 % CI] (ppl, KL) | success@budget |"
    )
    print("|---|---|---:|---:|---|---|---:|")
    for name, entry in report["behaviours"].items():
        base = entry["unsteered"]
        print(
            f"| {name} | unsteered | | | {sum(base['success']) / len(base['success']):.2f} ({base['ppl']:.2f}) | | |"
        )
        for method, data in entry["methods"].items():
            s = data["summary"]
            one, best = s["at_alpha_1"], s["best_within_budget"]
            support = "/".join(str(x) for x in data["support"]) if data["support"][0] else "dense"
            acc = sum(a for a in data["val_accuracy"] if a is not None) / max(
                1, len(data["val_accuracy"])
            )
            best_text = (
                f"α {best['alpha']:g}: {best['success']:.2f} [{best['ci'][0]:.2f}, {best['ci'][1]:.2f}] ({best['ppl']:.2f}, {best['kl']:.3f})"
                if best
                else "none within budget"
            )
            mark = "" if s["success_at_budget_reached"] else "≥ "
            print(
                f"| {name} | {method} | {support} | {acc:.2f} | {one['success']:.2f} ({one['ppl']:.2f}) | {best_text} | {mark}{s['success_at_budget']:.2f} |"
            )
    print("\nseconds:", {k: round(v) for k, v in report["seconds"].items()})
    for name, entry in report["behaviours"].items():
        print(name, json.dumps(entry["diagnostics"], default=lambda x: round(x, 3)))


if __name__ == "__main__":
    main()
