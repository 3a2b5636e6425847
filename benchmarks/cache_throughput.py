"""Activation-cache benchmarks (issue 3), printed as ratios; run once, on an otherwise idle machine.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python benchmarks/cache_throughput.py [--tokens 16384]

1. cache tokens/s ÷ bare forward tokens/s on the same tokens (target ≥ 0.95: writing hides behind
   compute), for each forward: TransformerLens `stop_at_layer=16`, the HF truncated model eager
   (oneDNN linears on packed weights, the CPU default; also timed bare with torch's plain
   `F.linear`), and the same compiled with `torch.compile` (our caches are timed with those sources).
2. vs sae-lens `CacheActivationsRunner` (same model weights, tokens, hook): tokens/s ratio (target
   ≥ 1.2) and disk bytes/token of both (target ≤ 0.5× with 16-bit storage).
3. shuffled-batch ÷ sequential reading of the same cache, batches of 4096 (target ≥ 0.8), on a
   synthetic 65,536-token × 576 float32 cache (the file is in the page cache for both).

One-time costs of a job are printed apart: the weights checksum (the first job of a process; later
ones reuse it) and the compile (the first compiled batch), with the job length where the compile
pays for itself."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
HOOK = "blocks.15.hook_resid_post"


def folder_bytes(path: Path) -> int:
    return sum(
        p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_forwards(tl, sources: dict, tokens: np.ndarray, batch: int) -> dict[str, float]:
    """tokens/s of a bare TL `stop_at_layer=16` forward and of each HF source called directly."""
    batches = [
        torch.as_tensor(tokens[i : i + batch], dtype=torch.long)
        for i in range(0, len(tokens), batch)
    ]

    def tl_run():
        with torch.inference_mode():
            for b in batches:
                tl(b, stop_at_layer=16)

    rates = {"bare TL stop_at_layer=16": tokens.size / timed(tl_run)}
    for name, source in sources.items():
        rates[f"bare HF {name}"] = tokens.size / timed(lambda s=source: [s(b) for b in batches])
    return rates


def sae_lens_cache(tl, tokens: np.ndarray, batch: int, out: Path) -> tuple[float, int]:
    import datasets
    import sae_lens.cache_activations_runner as runner_module
    from sae_lens import CacheActivationsRunner, CacheActivationsRunnerConfig

    runner_module.load_model = lambda **kwargs: tl  # offline: hand it our TransformerLens model
    cfg = CacheActivationsRunnerConfig(
        dataset_path="local",
        model_name="smollm2-135m-instruct",
        model_batch_size=batch,
        hook_name=HOOK,
        d_in=576,
        training_tokens=tokens.size,
        context_size=tokens.shape[1],
        new_cached_activations_path=str(out),
        shuffle=False,
        dtype="float32",
        device="cpu",
        prepend_bos=False,
        buffer_size_gb=tokens.size * 576 * 4 / 1e9,
    )
    dataset = datasets.Dataset.from_dict({"input_ids": tokens.tolist()})
    runner = CacheActivationsRunner(cfg, override_dataset=dataset)
    seconds = timed(runner.run)
    return tokens.size / seconds, folder_bytes(out)


class RandomSource:
    """A custom activation source of seeded random [B, L, 576] activations (for the read benchmark)."""

    backend, max_context, hooks = "random", 1 << 20, [HOOK]

    def __call__(self, tokens):
        generator = torch.Generator().manual_seed(int(tokens[0, 0]))
        return {HOOK: torch.randn(*tokens.shape, 576, generator=generator)}

    def weights_sha256(self) -> str:
        return "random"

    def describe(self) -> dict:
        return {"backend": self.backend}


def read_ratio(folder: Path) -> dict[str, float]:
    from activations_cache import open_cache, write_cache

    tokens = np.arange(512 * 128, dtype=np.int32).reshape(512, 128)
    path = write_cache(
        folder / "random.h5", RandomSource(), tokens, [HOOK], batch_size=64, progress=False
    )
    with open_cache(path) as reader:
        for _ in reader.sequential_batches(HOOK, 4096):  # warm the page cache and checksum set
            pass
    results = {}
    for name, make in [
        ("sequential", lambda r: r.sequential_batches(HOOK, 4096)),
        ("shuffled", lambda r: r.shuffled_batches(HOOK, 4096, seed=0)),
    ]:
        with open_cache(path) as reader:  # fresh reader: checksums verified during the timed pass
            seconds = timed(lambda make=make, reader=reader: [b.sum() for b in make(reader)])
        results[f"read {name} tok/s"] = tokens.size / seconds
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds (best kept)")
    args = parser.parse_args()

    from activations_cache import HFResidualSource, write_cache
    from saesteer.corpus import make_contexts
    from saesteer.models import load_hf_model, load_model

    tl, tokenizer = load_model("smollm2-135m-instruct", n_layers=16)
    hf = load_hf_model("smollm2-135m-instruct")
    tokens = make_contexts(tokenizer, "brown", 128, args.tokens).tokens
    work = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    print(
        f"{tokens.size} tokens ({tokens.shape[0]}×128), hook {HOOK}, batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}"
    )
    plain = HFResidualSource(hf, [HOOK], packed_linears=False)  # torch's F.linear (MKL)
    eager = HFResidualSource(hf, [HOOK])  # oneDNN linears on packed weights (the CPU default)
    compiled = HFResidualSource(hf, [HOOK])
    compiled.compile_for(args.batch_size, 128)
    sources = {"plain F.linear": plain, "eager": eager, "compiled": compiled}
    first = torch.as_tensor(tokens[: args.batch_size], dtype=torch.long)
    fixed = {
        "weights sha256 (layers 0–15 + embedding), first job of a process": timed(
            eager.weights_sha256
        ),
        "torch.compile of the forward (first compiled batch)": timed(lambda: compiled(first)),
    }
    try:
        bare_forwards(tl, sources, tokens[: args.batch_size], args.batch_size)  # warm-up
        results: dict[str, float] = {}
        sizes: dict[str, float] = {}

        def keep_best(name: str, tok_per_s: float) -> None:
            results[name] = max(results.get(name, 0.0), tok_per_s)

        # Rounds interleave every measurement, so drift in the machine's speed hits all alike;
        # each keeps its best round. Our caches reuse the process's weights hash and compiled
        # forward (both one-time costs, printed separately).
        for round_index in range(args.repeats):
            for name, value in bare_forwards(tl, sources, tokens, args.batch_size).items():
                keep_best(name, value)
            for name, model, dtype in [
                ("ours TL backend fp32", tl, "float32"),
                ("ours HF eager fp32", eager, "float32"),
                ("ours HF compiled fp32", compiled, "float32"),
                ("ours HF compiled fp16", compiled, "float16"),
            ]:
                out = work / f"{name.replace(' ', '_')}-{round_index}.h5"
                seconds = timed(
                    lambda m=model, d=dtype, o=out: write_cache(
                        o,
                        m,
                        tokens,
                        [HOOK],
                        dtype=d,
                        batch_size=args.batch_size,
                        progress=False,
                        compile=m is compiled,
                    )
                )
                keep_best(name, tokens.size / seconds)
                sizes[name] = folder_bytes(out) / tokens.size
            sl_rate, sl_bytes = sae_lens_cache(
                tl, tokens, args.batch_size, work / f"sae_lens-{round_index}"
            )
            keep_best("sae-lens CacheActivationsRunner fp32", sl_rate)
            sizes["sae-lens CacheActivationsRunner fp32"] = sl_bytes / tokens.size
        for name, value in read_ratio(work).items():
            keep_best(name, value)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, sizes, fixed)


def report(results: dict[str, float], sizes: dict[str, float], fixed: dict[str, float]) -> None:
    for name, value in results.items():
        print(
            f"{name:<40} {value:10.0f} tok/s"
            + (f"   {sizes[name]:7.0f} bytes/token" if name in sizes else "")
        )
    for name, seconds in fixed.items():
        print(f"one-time: {name:<66} {seconds:6.1f} s")
    sl = results["sae-lens CacheActivationsRunner fp32"]
    ratios = [
        ("ours TL ÷ bare TL forward", results["ours TL backend fp32"], results["bare TL stop_at_layer=16"], "≥ 0.95"),
        ("ours HF eager ÷ bare HF eager forward", results["ours HF eager fp32"], results["bare HF eager"], "≥ 0.95"),
        ("ours HF compiled ÷ bare HF compiled forward", results["ours HF compiled fp32"], results["bare HF compiled"], "≥ 0.95"),
        ("ours HF compiled fp32 ÷ sae-lens tokens/s", results["ours HF compiled fp32"], sl, "≥ 1.2"),
        ("ours HF compiled fp16 ÷ sae-lens tokens/s", results["ours HF compiled fp16"], sl, ""),
        ("ours HF eager fp32 ÷ sae-lens tokens/s", results["ours HF eager fp32"], sl, ""),
        ("bare HF packed ÷ plain F.linear forward", results["bare HF eager"], results["bare HF plain F.linear"], ""),
        ("ours TL fp32 ÷ sae-lens tokens/s", results["ours TL backend fp32"], sl, ""),
        ("ours fp16 ÷ sae-lens bytes/token", sizes["ours HF compiled fp16"], sizes["sae-lens CacheActivationsRunner fp32"], "≤ 0.5"),
        ("shuffled ÷ sequential read", results["read shuffled tok/s"], results["read sequential tok/s"], "≥ 0.8"),
    ]  # fmt: skip
    print("\nratios")
    for name, ours, theirs, target in ratios:
        print(f"  {name:<46} {ours / theirs:5.2f}" + (f"  (target {target})" if target else ""))
    # The compile pays for itself once the time it saves exceeds its one-time cost.
    compile_s = fixed["torch.compile of the forward (first compiled batch)"]
    saved_per_token = 1 / results["ours HF eager fp32"] - 1 / results["ours HF compiled fp32"]
    if saved_per_token > 0:
        print(f"\ncompile break-even: {compile_s / saved_per_token:,.0f} tokens")


if __name__ == "__main__":
    main()
