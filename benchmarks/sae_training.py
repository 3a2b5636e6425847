"""TopK SAE training speed and quality: saesteer vs sae-lens on the same cached activations.

Both trainers read the same saesteer HDF5 cache of the default model (SmolLM2-135M-Instruct,
`blocks.15.hook_resid_post`, Brown corpus train split) through the same shuffled reader, and train
the same TopK SAE (576 → 4608, k 32, batch 4096, same tokens, learning rate, warm-up and decay,
inputs normalised to mean norm sqrt(d_in) by both). Printed: tokens/s of each and their ratio,
explained variance (relative to the mean) and L0 of both on held-out tokens (validation split), and
the CPU time per token of our trainer's encode, decode, backward and optimizer step.

    .venv/bin/python benchmarks/sae_training.py                      # defaults below
    .venv/bin/python benchmarks/sae_training.py --steps 10 --cache-tokens 16384   # quicker
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch

HOOK = "blocks.15.hook_resid_post"


def build_cache(path: Path, n_tokens: int) -> tuple[Path, torch.Tensor]:
    """The training cache (reused when present) and held-out activations [n, 576]."""
    from activations_cache import write_cache
    from saesteer.corpus import make_contexts
    from saesteer.models import load_model

    model, tokenizer = load_model("smollm2-135m-instruct")
    if not path.exists():
        tokens = make_contexts(tokenizer, "brown", 128, n_tokens, split="train", seed=0).tokens
        write_cache(
            path,
            model,
            tokens,
            [HOOK],
            dtype="float32",
            batch_size=8,
            attrs={"model_name": "smollm2-135m-instruct"},
        )
    held = make_contexts(tokenizer, "brown", 128, 2048, split="validation", seed=1).tokens
    with torch.no_grad():
        _, cache = model.run_with_cache(
            torch.as_tensor(held, dtype=torch.long), names_filter=HOOK, stop_at_layer=16
        )
    return path, cache[HOOK].reshape(-1, 576)


def train_ours(
    cache: Path, out: Path, args: argparse.Namespace, seed: int = 0, skip_positions: int = 0
):
    """Our TopK SAE on `cache` with the script's settings; returns (sae, seconds)."""
    from saesteer.sae.configs import TrainSAEConfig
    from saesteer.sae.trainer import train_sae

    cfg = TrainSAEConfig(
        out=str(out),
        cache=str(cache),
        hook=HOOK,
        arch="topk",
        k=args.k,
        d_sae=args.d_sae,
        tokens=args.steps * args.batch,
        batch_size=args.batch,
        lr=args.lr,
        warmup_steps=args.warmup,
        decay_fraction=0.2,
        seed=seed,
        skip_positions=skip_positions,
        checkpoint_every=0,
        progress=False,
        init_tokens=args.batch,
    )
    start = time.perf_counter()
    result = train_sae(cfg)
    return result.sae, time.perf_counter() - start


def train_saelens(cache: Path, args: argparse.Namespace):
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    from saesteer.sae.cache_source import CacheSource

    steps = args.steps
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * args.batch,
        train_batch_size_samples=args.batch,
        lr=args.lr,
        lr_end=0.0,
        lr_warm_up_steps=args.warmup,
        lr_decay_steps=max(1, int(0.2 * steps)),
        device="cpu",
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=1,
    )
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=576, d_sae=args.d_sae, k=args.k, normalize_activations="expected_average_only_in"
        )
    )
    batches = CacheSource(cache, HOOK).batches(args.batch, seed=0)
    start = time.perf_counter()
    trained = SAETrainer(trainer_cfg, sae, data_provider=batches).fit()
    return trained, time.perf_counter() - start


@torch.no_grad()
def quality(encode, decode, x: torch.Tensor) -> dict[str, float]:
    z = encode(x)
    recon = decode(z)
    ev = 1 - float((x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return {"explained_variance": ev, "l0": float((z > 0).sum(1).float().mean())}


def component_times(sae, x: torch.Tensor) -> dict[str, float]:
    """CPU µs per token of our training step's parts on one batch (best of 3)."""
    from saesteer.sae.sparse import _SparseTopKEncode, sparse_decode
    from saesteer.sae.training import LossSettings, TrainingSAE

    module = TrainingSAE(sae, LossSettings())
    optimizer = torch.optim.Adam(module.parameters())
    dead = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    x_c = x - sae.b_dec.detach()

    def cpu(fn) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            fn()
            best = min(best, time.process_time() - start)
        return best * 1e6 / x.shape[0]

    vals, idx, *_ = _SparseTopKEncode.apply(x_c, sae.W_enc.detach(), sae.b_enc.detach(), sae.cfg.k)
    times = {
        "encode (x·W_enc + TopK)": cpu(
            lambda: _SparseTopKEncode.apply(x_c, sae.W_enc.detach(), sae.b_enc.detach(), sae.cfg.k)
        ),
        "decode (embedding_bag)": cpu(lambda: sparse_decode(idx, vals, sae.W_dec.detach())),
    }

    def backward() -> None:
        module(x, dead).loss.backward()

    forward_backward = cpu(backward)
    forward = cpu(lambda: module(x, dead))
    times["backward (all parameters)"] = forward_backward - forward
    times["optimizer step + renorm"] = cpu(lambda: (optimizer.step(), module.after_step()))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/saesteer-bench-sae"))
    parser.add_argument("--cache-tokens", type=int, default=32_768)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cache, held_out = build_cache(args.workdir / f"acts-{args.cache_tokens}.h5", args.cache_tokens)
    tokens = args.steps * args.batch
    print(
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}; "
        f"{tokens} training tokens ({args.steps} steps × {args.batch}) from a {args.cache_tokens}-token cache"
    )

    out = args.workdir / f"ours-{time.time_ns()}"
    ours, ours_s = train_ours(cache, out, args)
    theirs, theirs_s = train_saelens(cache, args)
    ours_q = quality(ours.encode, ours.decode, held_out)
    theirs_q = quality(theirs.encode, theirs.decode, held_out)
    print(
        f"saesteer: {tokens / ours_s:8.0f} tok/s  EV {ours_q['explained_variance']:.4f}  L0 {ours_q['l0']:.1f}"
    )
    print(
        f"sae-lens: {tokens / theirs_s:8.0f} tok/s  EV {theirs_q['explained_variance']:.4f}  L0 {theirs_q['l0']:.1f}"
    )
    print(f"speed ratio saesteer / sae-lens: {theirs_s / ours_s:.2f}×")
    x = (
        held_out[: args.batch]
        if held_out.shape[0] >= args.batch
        else held_out.repeat(2, 1)[: args.batch]
    )
    from saesteer.sae.model import SAE

    probe = SAE(ours.cfg)
    probe.load_state_dict(ours.state_dict())
    print("our trainer, CPU µs per token:")
    for name, value in component_times(probe, x).items():
        print(f"  {name:28s} {value:7.1f}")


if __name__ == "__main__":
    main()
