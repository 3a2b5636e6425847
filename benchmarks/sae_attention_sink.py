"""Does leaving out the attention sink (`--skip-positions 1`) train a better SAE? (SmolLM2, CPU)

    .venv/bin/python benchmarks/sae_attention_sink.py --work /tmp/saesteer-bench-fp16

In SmolLM2-135M the first token of every context is an attention sink: at `blocks.15.hook_resid_post`
its residual norm is ~100× a typical token's, so it dominates both the MSE and the input
normalisation (mean norm → sqrt(d_in)) of an SAE trained on every position. This script trains the
same TopK SAE (`benchmarks/sae_training.py`'s settings: 576 → 4608, k 32, batch 4096, 30 steps,
seed 0) on the same float32 cache (`benchmarks/cache_fp16_sae.py`'s, reused from `--work`) with
`skip_positions` 0 and 1, and evaluates both on held-out validation activations computed straight
from the model: explained variance on all positions and on positions ≥ 1 (the tokens an
interpretability user looks at), L0 and dead fraction. No assertions: a table to read.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch
from cache_fp16_sae import MODEL, evaluate, heldout_activations, write_caches
from machine import cpu_name
from sae_training import train_ours


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, help="folder for the caches (kept); default: temp")
    parser.add_argument("--tokens", type=int, default=65_536, help="cached training tokens")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--heldout-tokens", type=int, default=16_384)
    args = parser.parse_args()
    args.k, args.d_sae, args.lr, args.warmup = 32, 4608, 4e-4, 5  # sae_training.py's settings

    from saesteer.models import load_hf_model, load_tokenizer

    print(f"machine: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    model, tokenizer = load_hf_model(MODEL), load_tokenizer(MODEL)
    work = args.work or Path(tempfile.mkdtemp(prefix="sae-sink-"))
    work.mkdir(parents=True, exist_ok=True)
    paths, _ = write_caches(work, model, tokenizer, args.tokens)
    saes = Path(tempfile.mkdtemp(prefix="sae-sink-"))  # the SAEs are not kept
    held = heldout_activations(model, tokenizer, args.heldout_tokens)
    norms = held.norm(dim=-1)
    print(
        f"held-out ‖x‖: position 0 median {norms[:, 0].median():,.0f}, "
        f"positions ≥ 1 median {norms[:, 1:].median():,.0f}"
    )
    rows = {}
    for skip in (0, 1):
        sae, seconds = train_ours(paths["float32"], saes / f"skip{skip}", args, skip_positions=skip)
        rows[skip] = evaluate(sae, held)
        print(f"skip_positions {skip}: trained in {seconds:.0f} s")
    print("\n| metric (held-out) | skip 0 (every position) | skip 1 (no sink) |")
    print("|---|---:|---:|")
    for key, label in [
        ("explained_variance", "explained variance, all positions"),
        ("explained_variance_no0", "explained variance, positions ≥ 1"),
        ("l0", "L0"),
        ("dead_fraction", "dead fraction"),
    ]:
        print(f"| {label} | {rows[0][key]:.4f} | {rows[1][key]:.4f} |")


if __name__ == "__main__":
    main()
