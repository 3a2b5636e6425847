"""Is a TopK SAE trained on a float16 activation cache any worse than one trained on float32? (issue 3)

    .venv/bin/python benchmarks/cache_fp16_sae.py --work /tmp/saesteer-bench-fp16   # defaults below
    .venv/bin/python benchmarks/cache_fp16_sae.py --tokens 8192 --steps 20           # smoke run

Steps, all on the default model (SmolLM2-135M-Instruct, float32), hook `blocks.15.hook_resid_post`:

1. Two caches of the SAME tokens (`--tokens` Brown train-split tokens in 128-token contexts,
   `make_contexts(..., split="train", seed=0)`), written by `activations_cache.write_cache` from
   the Hugging Face model (eager forward, batch 8): storage dtype float32 and float16. Printed:
   bytes/token of each file and ÷ sae-lens' 2,312 bytes/token (576 float32 + 8; issue 3 asks for
   ≤ 0.5 with 16-bit storage), and what the fp16 rounding costs on the training data itself
   (Σ‖x16 − x32‖² / Σ‖x32 − μ‖², max |x|, non-finite values, and whether the fp16 file is exactly
   the fp32 file rounded, i.e. the two forwards agree). With `--work DIR` the caches are kept and
   reused (a half-written one is resumed); without it they live in a temporary folder.
2. The same TopK SAE (576 → 4608, k 32, batch 4096, lr 4e-4, 5 warm-up steps, linear decay over
   the last 20 %: `benchmarks/sae_training.py`'s settings) trained by `saesteer.sae.trainer.train_sae`
   on each cache with the same seed, so the data order and initialisation are the same and only
   the stored values differ. A control run on the float32 cache with seed + 1 gives the
   seed-to-seed spread that the fp16 − fp32 differences should be read against (`--no-control`
   skips it).
3. Every SAE is evaluated with `saesteer.sae.evals.reconstruction_metrics` on the same held-out
   float32 activations (`--heldout-tokens` of the Brown validation split, seed 1234 as
   `saesteer sae eval`), computed straight from the HF model (`hidden_states[16]`), not from a
   cache: explained variance (relative to the mean), also without position 0 of each context (the
   attention sink), FVU, L0, dead and dense fractions.

Printed: a table of both SAEs, the differences fp16 − fp32, and the control's differences, plus
the machine (CPU model, torch threads, load average). No assertions: read the differences against
the seed spread.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import torch
from machine import cpu_name
from sae_training import train_ours

MODEL = "smollm2-135m-instruct"
HOOK = "blocks.15.hook_resid_post"
LAYER = 15
CONTEXT_LEN = 128
METRICS = [  # (key, label); "_no0" keys are over positions ≥ 1 of each context
    ("explained_variance", "explained variance"),
    ("explained_variance_no0", "EV without position 0"),
    ("fvu", "FVU"),
    ("fvu_no0", "FVU without position 0"),
    ("mse_per_token", "MSE per token"),
    ("l0", "L0"),
    ("dead_fraction", "dead fraction"),
    ("dense_fraction", "dense fraction (> 0.1)"),
]


def fmt(value: float, sign: str = "") -> str:
    """5 decimals; 1 with thousands separators at ≥ 100 (MSE with the attention sink); 3 significant
    digits below 1e-3 (fp16 − fp32 differences are often that small)."""
    if abs(value) >= 100:
        return f"{value:{sign},.1f}"
    return f"{value:{sign}.2e}" if 0 < abs(value) < 1e-3 else f"{value:{sign}.5f}"


def write_caches(work: Path, model, tokenizer, n_tokens: int) -> tuple[dict[str, Path], int]:
    """float32 and float16 caches of the same train-split tokens (existing files are reused);
    returns the paths and the number of tokens (rounded up to whole contexts)."""
    from activations_cache import open_cache, write_cache
    from saesteer.corpus import make_contexts

    contexts = make_contexts(tokenizer, "brown", CONTEXT_LEN, n_tokens, split="train", seed=0)
    paths = {}
    for dtype in ("float32", "float16"):
        path = work / f"brown-train-{contexts.tokens.size}-{dtype}.h5"
        if path.exists():
            print(f"reusing {path}")
        else:
            start = time.perf_counter()
            write_cache(
                path,
                model,
                contexts.tokens,
                [HOOK],
                dtype=dtype,
                batch_size=8,
                attrs={"model_name": MODEL},
                token_metadata={"doc_id": contexts.doc_ids, "special_mask": contexts.special_mask},
                resume=True,  # continues a half-written cache of the same inputs
                progress=False,
                compile=False,  # the same eager forward for both files
            )
            seconds = time.perf_counter() - start
            print(f"wrote {path} in {seconds:.0f} s ({contexts.tokens.size / seconds:,.0f} tok/s)")
        with open_cache(path) as reader:
            if not np.array_equal(reader.tokens, contexts.tokens.reshape(-1)):
                raise SystemExit(f"{path} holds other tokens than this run's; delete it.")
        paths[dtype] = path
    return paths, int(contexts.tokens.size)


@torch.no_grad()
def storage_error(paths: dict[str, Path]) -> dict[str, float]:
    """What fp16 storage does to the training activations, against the fp32 cache."""
    from activations_cache import open_cache

    err = total = sum_sq = 0.0
    sum_x = None
    max_abs = differing = nonfinite = n = 0
    with open_cache(paths["float32"]) as r32, open_cache(paths["float16"]) as r16:
        for x32, x16 in zip(
            r32.sequential_batches(HOOK, 8192), r16.sequential_batches(HOOK, 8192), strict=True
        ):
            x64 = x32.double()
            n += x32.shape[0]
            sum_x = x64.sum(0) if sum_x is None else sum_x + x64.sum(0)
            sum_sq += float(x64.pow(2).sum())
            err += float((x16.double() - x64).pow(2).sum())
            max_abs = max(max_abs, float(x32.abs().max()))
            nonfinite += int((~torch.isfinite(x16)).sum())
            differing += int((x32.half().float() != x16).sum())
    total = sum_sq - float(sum_x.pow(2).sum()) / n
    return {
        "relative_error": err / total,
        "max_abs": max_abs,
        "nonfinite": nonfinite,
        "differing": differing,
        "elements": n * len(sum_x),
    }


@torch.no_grad()
def heldout_activations(model, tokenizer, n_tokens: int) -> torch.Tensor:
    """float32 `blocks.15.hook_resid_post` [n_ctx, L, 576] of validation-split contexts (seed 1234)."""
    from saesteer.corpus import make_contexts

    tokens = make_contexts(
        tokenizer, "brown", CONTEXT_LEN, n_tokens, split="validation", seed=1234
    ).tokens
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    parts = []
    for start in range(0, tokens.shape[0], 8):
        out = model(tokens[start : start + 8], output_hidden_states=True)
        parts.append(out.hidden_states[LAYER + 1].float())  # [0] is the embedding output
    return torch.cat(parts)


def evaluate(sae, acts: torch.Tensor) -> dict[str, float]:
    from saesteer.sae.evals import reconstruction_metrics

    blocks = 32  # contexts per batch: 4096 tokens, a [4096, 4608] latent matrix at a time
    metrics, _ = reconstruction_metrics(sae, acts.split(blocks))
    rest, _ = reconstruction_metrics(sae, (a[:, 1:] for a in acts.split(blocks)))
    metrics["explained_variance_no0"] = rest["explained_variance"]
    metrics["fvu_no0"] = rest["fvu"]
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, help="folder for caches (kept); default: a temp dir")
    parser.add_argument("--tokens", type=int, default=65_536, help="cached training tokens")
    parser.add_argument("--steps", type=int, default=30, help="SAE training steps")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--heldout-tokens", type=int, default=16_384)
    parser.add_argument("--no-control", action="store_true", help="skip the seed + 1 run")
    args = parser.parse_args()

    from saesteer.models import load_hf_model, load_tokenizer

    print(
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at start"
    )
    with ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fp16-sae-")))
        else:
            work = args.work
            work.mkdir(parents=True, exist_ok=True)
        model, tokenizer = load_hf_model(MODEL), load_tokenizer(MODEL)
        paths, n_cached = write_caches(work, model, tokenizer, args.tokens)
        held = heldout_activations(model, tokenizer, args.heldout_tokens)
        del model

        d_in = held.shape[-1]
        sae_lens = 4 * d_in + 8  # sae-lens' float32 cache: d floats + 8 bytes per token
        print(f"\ncache of {n_cached:,} tokens (sae-lens float32: {sae_lens:,} bytes/token)")
        for dtype, path in paths.items():
            per_token = path.stat().st_size / n_cached
            print(
                f"  {dtype}: {per_token:8,.1f} bytes/token, {per_token / sae_lens:.3f} × sae-lens"
            )
        err = storage_error(paths)
        print(
            f"fp16 storage on the training data: Σ‖x16 − x32‖² / Σ‖x32 − μ‖² = "
            f"{err['relative_error']:.2e}; max |x| {err['max_abs']:,.1f} (fp16 max 65,504), "
            f"{err['nonfinite']} non-finite; {err['differing']} of {err['elements']:,} values "
            "differ from the fp32 cache rounded to fp16"
        )

        runs = {"fp32": (paths["float32"], args.seed), "fp16": (paths["float16"], args.seed)}
        if not args.no_control:
            runs[f"fp32 seed {args.seed + 1}"] = (paths["float32"], args.seed + 1)
        print(
            f"\ntraining {args.steps} steps × {args.batch} = {args.steps * args.batch:,} tokens "
            f"per SAE ({args.steps * args.batch / n_cached:.1f} epochs), {d_in} → {args.d_sae}, "
            f"k {args.k}; held-out: {held.shape[0] * held.shape[1]:,} validation tokens"
        )
        sae_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fp16-sae-")))
        results = {}
        for name, (cache, seed) in runs.items():
            sae, seconds = train_ours(cache, sae_dir / name.replace(" ", "-"), args, seed)
            results[name] = evaluate(sae, held)
            print(
                f"  {name}: trained in {seconds:.0f} s ({args.steps * args.batch / seconds:,.0f} tok/s)"
            )

    control = None if args.no_control else f"fp32 seed {args.seed + 1}"
    columns = [*results, "fp16 − fp32"] + (["seed spread"] if control else [])
    print("\n| metric (held-out) | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for key, label in METRICS:
        values = [fmt(results[name][key]) for name in results]
        diffs = [results["fp16"][key] - results["fp32"][key]]
        if control:
            diffs.append(results[control][key] - results["fp32"][key])
        print("| " + " | ".join([label, *values, *(fmt(d, "+") for d in diffs)]) + " |")
    if control:
        print(f"(seed spread: {control} minus fp32 seed {args.seed}, both on the fp32 cache)")


if __name__ == "__main__":
    main()
