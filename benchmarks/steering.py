"""Steering benchmark: YaPO vs BiPO vs mean-difference on a shipped behaviour, at equal effect norm.

For each method: training seconds (and per epoch), validation preference accuracy (r(y_w) > r(y_l),
DPO's reward accuracy) and mean margin r(y_w) − r(y_l) in nats, then generations from the
validation prompts (`--samples` per prompt, sampled at `--temperature` with a fixed seed; greedy if
1) scored by the behaviour's scorer, at strengths chosen so every method makes the **same residual-space edit size**:

    ρ = mean_t ‖h'_t − h_t‖ / mean_t ‖h_t‖        over the validation completion tokens at the hook

Dense vectors: α = ρ · mean‖h‖ / ‖v‖ exactly. YaPO codes: α by bisection (‖Δh‖ grows with α; it is
linear only while no z_i + α v_i crosses 0). Coherence is the perplexity of each generation under
the unsteered model (lower is more fluent; repetition also lowers it, so read the texts too).

    .venv/bin/python benchmarks/steering.py --sae demo_out/sae --behaviour sentiment \
        --epochs 2 --lr 0.1 --top-k 32

Without --sae, a TopK SAE is trained on --cache (an activations cache at the steered hook).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from saesteer.steer.batching import tokenize_pairs
from saesteer.steer.behaviours import behaviour, success_rate, training_data
from saesteer.steer.config import TrainSteerConfig
from saesteer.steer.generate import batch_prompt_ids, generate_steered
from saesteer.steer.train import _cache_split, fit_steering, start_layer, validation_margins


def parse_args() -> argparse.Namespace:
    defaults = TrainSteerConfig(pairs="")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--sae", default="", help="SAE folder at the steered hook")
    p.add_argument("--cache", default="", help="activations cache to train an SAE on (no --sae)")
    p.add_argument("--sae-out", default="bench_sae", help="where the trained SAE goes")
    p.add_argument("--behaviour", default="sentiment")
    p.add_argument("--methods", default="yapo,bipo,mean-diff")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--lr", type=float, default=defaults.lr, help="relative lr (see train.py)")
    p.add_argument("--l1", type=float, default=defaults.l1)
    p.add_argument("--top-k", type=int, default=defaults.top_k, help="YaPO support cap (0: none)")
    p.add_argument("--rhos", default="0.1,0.2,0.3", help="effect norms ‖Δh‖/‖h‖ to generate at")
    p.add_argument("--n-prompts", type=int, default=12, help="distinct validation prompts")
    p.add_argument("--samples", type=int, default=3, help="generations per prompt (sampled if > 1)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--show", type=int, default=2, help="generations printed per point")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def get_sae(args: argparse.Namespace):
    from saesteer.sae import TrainSAEConfig, load_sae, train_sae

    if not args.sae:
        if not args.cache:
            raise SystemExit("Give --sae DIR, or --cache ACTS.h5 to train one.")
        train_sae(TrainSAEConfig(out=args.sae_out, cache=args.cache, arch="topk", k=32))
        args.sae = args.sae_out
    return load_sae(args.sae, "cpu").requires_grad_(False)


def alpha_for(code, h: torch.Tensor, target: float) -> float:
    """α > 0 with mean ‖code.apply(h, α) − h‖ = target (exact for dense, bisection otherwise)."""
    unit = code.effect_norm(h, 1.0)
    if code.method != "yapo":
        return target / unit
    lo, hi = 0.0, target / unit
    while code.effect_norm(h, hi) < target:
        lo, hi = hi, 2 * hi
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if code.effect_norm(h, mid) < target else (lo, mid)
    return (lo + hi) / 2


@torch.no_grad()
def perplexity(hf, tokenizer, prompts, texts, chat: bool) -> float:
    """exp of the mean per-token NLL of the generated texts given their prompts (unsteered)."""
    nll, count = 0.0, 0
    for prompt, text in zip(prompts, texts, strict=True):
        head, _ = batch_prompt_ids(tokenizer, [prompt], chat=chat)
        tail = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        if tail.shape[1] == 0:
            continue
        ids = torch.cat([head, tail], dim=1)
        logp = torch.log_softmax(hf(ids).logits[0, head.shape[1] - 1 : -1].float(), -1)
        nll -= logp.gather(-1, tail[0, :, None]).sum().item()
        count += tail.shape[1]
    return math.exp(nll / max(count, 1))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from saesteer.models import load_hf_model, load_model

    model, tokenizer = load_model(args.model, "cpu")
    hf = load_hf_model(args.model, "cpu")
    sae = get_sae(args)
    chosen = behaviour(args.behaviour)
    train, val = training_data(args.behaviour)
    distinct = list(dict.fromkeys(p.prompt for p in val))[: args.n_prompts]
    prompts = [p for p in distinct for _ in range(args.samples)]
    temperature = args.temperature if args.samples > 1 else 0.0
    layer = start_layer(sae.cfg.hook_name)
    val_split = _cache_split(model, tokenize_pairs(tokenizer, val, chosen.chat), layer, "cpu")
    h = val_split.resid[val_split.tokens.target_mask > 0]
    h_norm = h.norm(dim=-1).mean().item()
    rhos = [float(r) for r in args.rhos.split(",")]
    print(
        f"model {args.model}, hook {sae.cfg.hook_name}, SAE {args.sae} ({sae.cfg.arch}, "
        f"k {sae.cfg.k}, d_sae {sae.cfg.d_sae}); {args.behaviour}: {len(train)} train / "
        f"{len(val)} val pairs, {len(distinct)} prompts × {args.samples} samples (T {temperature}); mean ‖h‖ {h_norm:.1f}",
        flush=True,
    )

    def generate(code, alpha):
        started = time.time()
        texts = generate_steered(
            hf,
            tokenizer,
            prompts,
            code=code,
            alpha=alpha,
            chat=chosen.chat,
            max_new_tokens=args.max_new_tokens,
            temperature=temperature,
            seed=0,
        )
        ppl = perplexity(hf, tokenizer, prompts, texts, chosen.chat)
        return texts, success_rate(args.behaviour, texts), ppl, time.time() - started

    texts, rate, ppl, secs = generate(None, 0.0)
    base = (rate, ppl)
    print(f"\nunsteered: success {rate:.2f}, ppl {ppl:.1f} ({secs:.0f} s)")
    for p, t in zip(prompts[: args.show], texts, strict=False):
        print(f"    {p!r} → {t!r}")
    rows = []
    for method in args.methods.split(","):
        config = TrainSteerConfig(
            pairs=args.behaviour,
            method=method,
            chat=chosen.chat,
            epochs=args.epochs,
            lr=args.lr,
            l1=args.l1,
            top_k=args.top_k or None,
            progress=False,
        )
        started = time.time()
        code = fit_steering(model, tokenizer, train, config, sae=sae, val_pairs=val).code
        seconds = time.time() - started
        meta = code.meta
        epochs = 1 if method == "mean-diff" else args.epochs
        print(
            f"\n== {method}: {seconds:.0f} s total, {meta['train_seconds'] / epochs:.1f} s/epoch, "
            f"val accuracy {meta['val_accuracy']:.2f} (reversed {meta['val_accuracy_reversed']:.2f}), "
            f"‖Δh‖/‖h‖ at α=1 {meta['effect_ratio']:.3f}"
            + (f", support {code.support_size}" if method == "yapo" else ""),
            flush=True,
        )
        for rho in rhos:
            alpha = alpha_for(code, h, rho * h_norm)
            margins = validation_margins(
                model, val_split, layer, lambda x, a=alpha, c=code: c.apply(x, a)
            )
            accuracy, margin = (margins > 0).float().mean().item(), margins.mean().item()
            texts, rate, ppl, secs = generate(code, alpha)
            rows.append(
                (method, meta["train_seconds"] / epochs, rho, alpha, accuracy, margin, rate, ppl)
            )
            print(
                f"  ρ {rho:.2f} (α {alpha:.2f}): val accuracy {accuracy:.2f}, margin {margin:.1f}, "
                f"success {rate:.2f}, ppl {ppl:.1f} ({secs:.0f} s)",
                flush=True,
            )
            for p, t in zip(prompts[: args.show], texts, strict=False):
                print(f"    {p!r} → {t!r}")
    print("\n| method | s/epoch | ρ = ‖Δh‖/‖h‖ | α | val acc | val margin (nats) | success | ppl |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| unsteered | | 0 | 0 | | 0 | {base[0]:.2f} | {base[1]:.1f} |")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]:.1f} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.1f} | "
            f"{r[6]:.2f} | {r[7]:.1f} |"
        )


if __name__ == "__main__":
    main()
