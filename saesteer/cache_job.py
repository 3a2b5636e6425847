"""The cache job: model name + corpus → `activations_cache.write_cache` (one config, CLI and Python).

    from saesteer.cache_job import CacheConfig, run_cache
    run_cache(CacheConfig(out="acts.h5", hook=["blocks.15.hook_resid_post"], tokens=65536, dtype="float16"))

Backend (`backend`): "auto" runs the Hugging Face model, stopped after the last needed layer, when
every hook is a residual-stream hook (`blocks.{l}.hook_resid_pre|post`) and the model has HF weights
(the default model or a local HF folder) — the same tensors as TransformerLens up to float
rounding, computed faster on CPU; `compile` also runs that forward through `torch.compile`. Any other hook (attention, MLP, …) uses TransformerLens, loaded with only the blocks
it needs. "transformer_lens" / "hf" force a backend.

Distributed: under `torchrun --nproc_per_node=N -m saesteer cache ...` (WORLD_SIZE > 1) the job
initialises torch.distributed (gloo on CPU, nccl on CUDA, one GPU per LOCAL_RANK); every rank builds
the same contexts, computes its share of the shards, and rank 0 merges them into one file.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saesteer.config import config_to_dict, option
from saesteer.hook_names import hook_layer, is_resid_hook

# Options that do not change the bytes of the cache (excluded from the resume fingerprint).
_NOT_FINGERPRINTED = ("resume", "progress", "out")


@dataclass
class CacheConfig:
    """Options of `saesteer cache` (each one a `--flag`)."""

    out: str = option(help="output HDF5 file (PATH.h5); an unfinished run keeps PATH.h5.partial/")
    model: str = option(
        "smollm2-135m-instruct",
        "model name (see `saesteer info`), local HF folder, or TransformerLens name",
    )
    hook: list[str] = option(  # noqa: RUF009 (option() returns a field with a default factory)
        ["blocks.15.hook_resid_post"], "hook name(s) to cache; repeat --hook for several"
    )
    tokens: int = option(65536, "number of tokens to cache (rounded up to whole contexts)")
    context_len: int = option(128, "tokens per context (≤ the model's n_ctx)")
    dtype: str = option("float32", "storage dtype", choices=["float32", "float16", "bfloat16"])
    batch_size: int = option(8, "contexts per forward pass")
    resume: bool = option(False, "continue an unfinished cache at --out (inputs must match)")
    corpus: str = option(
        "brown", "text source: brown, a .txt/.jsonl/.parquet file, a folder, or hf:NAME"
    )
    split: str = option("train", "corpus split", choices=["train", "validation"])
    validation_fraction: float = option(
        0.05, "fraction of documents held out as the validation split"
    )
    seed: int = option(0, "seed of the corpus split and context order (and of the tiny-test model)")
    device: str = option("cpu", "torch device for the forward (cpu, cuda, cuda:1, …)")
    model_dtype: str = option(
        "float32", "compute dtype of the model", choices=["float32", "float16", "bfloat16"]
    )
    backend: str = option(
        "auto", "forward implementation", choices=["auto", "transformer_lens", "hf"]
    )
    compile: str = option(
        "auto",
        "torch.compile the HF forward: auto = for jobs of ≥ 1,048,576 tokens, where the one-time "
        "compile (~10–25 s on CPU) pays off",
        choices=["auto", "on", "off"],
    )
    chunk_rows: int = option(1024, "≈ rows per HDF5 chunk (rounded to whole contexts)")
    shard_tokens: int = option(32768, "≈ tokens per shard: the most work a killed run loses")
    progress: bool = option(True, "show a progress bar")


def choose_backend(config: CacheConfig) -> str:
    """'hf' or 'transformer_lens' for this config (see the module docstring)."""
    from saesteer.models import MODEL_ALIASES, TINY_MODEL, has_hf_weights

    name = MODEL_ALIASES.get(config.model, config.model)
    has_hf = has_hf_weights(name)
    if config.backend == "hf":
        if name == TINY_MODEL or not has_hf:
            raise ValueError(
                f"--backend hf needs Hugging Face weights; {config.model!r} has none here. "
                "Use --backend transformer_lens."
            )
        return "hf"
    if config.backend == "auto" and has_hf and all(is_resid_hook(h) for h in config.hook):
        return "hf"
    return "transformer_lens"


def load_for_cache(config: CacheConfig, backend: str, device: str) -> tuple[Any, Any]:
    """(model, tokenizer): the HF model for 'hf', else a HookedTransformer with only needed blocks."""
    from saesteer.models import load_hf_model, load_model, load_tokenizer

    if backend == "hf":
        return load_hf_model(config.model, device, config.model_dtype), load_tokenizer(config.model)
    blocks = [layer for h in config.hook if (layer := hook_layer(h)) is not None]
    in_blocks = all(
        hook_layer(h) is not None or h.startswith(("hook_embed", "hook_pos_embed"))
        for h in config.hook
    )
    n_layers = max(blocks, default=0) + 1 if in_blocks else None
    return load_model(config.model, device, config.model_dtype, n_layers=n_layers, seed=config.seed)


def run_cache(config: CacheConfig) -> Path:
    """Build the cache described by `config`; returns the path of the complete HDF5 file.

    The main process holds `saesteer.outputs.writer_lock` on the output for the whole job: a
    second `saesteer cache` on the same --out fails at once instead of mixing shards."""
    from saesteer.distributed import setup_distributed
    from saesteer.outputs import writer_lock

    if config.tokens < 1:
        raise ValueError(f"--tokens must be ≥ 1 (got {config.tokens}); nothing would be cached.")
    ctx = setup_distributed(config.device)
    try:
        with writer_lock(config.out) if ctx.main else contextlib.nullcontext():
            return _write(config, str(ctx.device))
    finally:
        if ctx.initialised:
            import torch

            torch.distributed.destroy_process_group()


def _write(config: CacheConfig, device) -> Path:
    """Contexts → model → `write_cache`, one writer holding the lock (see `run_cache`)."""
    import importlib.metadata

    from activations_cache import write_cache
    from saesteer.corpus import make_contexts

    backend = choose_backend(config)
    model, tokenizer = load_for_cache(config, backend, device)
    contexts = make_contexts(
        tokenizer,
        config.corpus,
        config.context_len,
        config.tokens,
        config.split,
        config.validation_fraction,
        config.seed,
    )
    description = contexts.describe()
    job = {k: v for k, v in config_to_dict(config).items() if k not in _NOT_FINGERPRINTED}
    attrs = {
        "model_name": config.model,
        "tokenizer": description["tokenizer"],
        "tokenizer_sha256": description["tokenizer_sha256"],
        "corpus": description,
        "corpus_checksum": description["documents_sha256"],
        "seed": config.seed,
        "job_config": job,
        "saesteer_version": importlib.metadata.version("saesteer"),
    }
    return write_cache(
        config.out,
        model,
        contexts.tokens,
        list(config.hook),
        dtype=config.dtype,
        batch_size=config.batch_size,
        attrs=attrs,
        token_metadata={"doc_id": contexts.doc_ids, "special_mask": contexts.special_mask},
        resume=config.resume,
        progress=config.progress,
        chunk_rows=config.chunk_rows,
        shard_tokens=config.shard_tokens,
        compile={"auto": "auto", "on": True, "off": False}[config.compile],
    )
