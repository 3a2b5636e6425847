"""`write_cache`: run a model over token contexts and store hook activations, crash-safely.

Flow (each step restartable):
1. Validate inputs; probe one short forward to learn each hook's width d and check it is per-token.
2. `PATH.h5.partial/job.json` records the inputs' fingerprint (tokens sha256, metadata sha256,
   model weights sha256, backend, hooks, dtype, layout). `resume=True` checks it field by field.
3. The compute thread runs batches of `batch_size` contexts; a writer thread encodes them to the
   storage dtype and writes each finished shard whole (temporary name → rename), so disk I/O hides
   behind the forward. A killed run loses at most the shard in progress.
4. When every shard exists, `merge_shards` builds `PATH.h5` through a temporary file and a rename,
   so `PATH.h5` only ever exists complete; the partial folder is then deleted.

Distributed (torch.distributed initialised, e.g. under torchrun): rank r computes the shards
s ≡ r (mod world_size) into the same partial folder (a shared filesystem); rank 0 writes job.json
before and merges after, between barriers. The merged file is identical to a single-process run.
"""

from __future__ import annotations

import errno
import os
import queue
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from activations_cache.format import (
    FORMAT_VERSION,
    RESERVED_ATTRS,
    CacheExistsError,
    CacheWriteError,
    ResumeMismatchError,
    check_storage_dtype,
    encode,
    sha256_array,
)
from activations_cache.merge import merge_shards
from activations_cache.shards import (
    JOB_FILE,
    CacheLayout,
    finished_shards,
    layout_from_job,
    layout_to_job,
    partial_dir,
    read_job,
    remove_stale_temporaries,
    write_json_atomic,
    write_shard,
)
from activations_cache.sources import make_source

# Jobs at least this long compile the forward when compile="auto": on a 2-core CPU the one-time
# compile (~10–25 s) is repaid after ~300–400k tokens (it saves 3–7 % of ~1,500 tok/s; see
# benchmarks/RESULTS.md), so from 2^20 tokens it is a clear gain.
COMPILE_MIN_TOKENS = 1 << 20

# Fields of job.json that must match for `resume` (layout is compared separately).
_FINGERPRINT_KEYS = (
    "hooks",
    "storage_dtype",
    "n_contexts",
    "context_len",
    "tokens_sha256",
    "metadata_sha256",
    "model_weights_sha256",
    "backend",
    "attrs",
)


def _dist() -> tuple[int, int]:
    """(rank, world_size) of an initialised torch.distributed group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


def _validate(
    tokens: np.ndarray, token_metadata: Mapping[str, np.ndarray], batch_size: int, max_context: int
) -> None:
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"tokens must be an integer array [n_contexts, context_len]; got {tokens.dtype} {tokens.shape}."
        )
    if tokens.size == 0:
        raise ValueError(
            f"No tokens to cache (tokens shape {tokens.shape}); ask for at least one full context."
        )
    if tokens.shape[1] > max_context:
        raise ValueError(
            f"context_len {tokens.shape[1]} exceeds the model's n_ctx {max_context}; "
            f"use a context length ≤ {max_context}."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}.")
    for name, values in token_metadata.items():
        if values.shape != tokens.shape:
            raise ValueError(
                f"token_metadata[{name!r}] has shape {values.shape}; expected {tokens.shape}."
            )
        if name == "position" or "/" in name:
            raise ValueError(
                f"token_metadata name {name!r} is reserved or contains '/'; rename it."
            )


def _probe(source: Any, tokens: np.ndarray) -> dict[str, int]:
    """Width d of each hook, from forwards on the first 1 and 2 tokens; rejects non per-token hooks.

    Two lengths, so that e.g. an attention pattern [B, heads, L, L] cannot pass for [B, L, d].
    """
    widths: dict[str, int] = {}
    for length in sorted({1, min(2, tokens.shape[1])}):
        probe = torch.as_tensor(tokens[:1, :length], dtype=torch.long)
        for hook, act in source(probe).items():
            _check_per_token(hook, act, 1, length)
            widths[hook] = int(np.prod(act.shape[2:], dtype=np.int64))
    return widths


def _check_per_token(hook: str, act: torch.Tensor, batch: int, length: int) -> None:
    if act.ndim < 3 or tuple(act.shape[:2]) != (batch, length):
        raise ValueError(
            f"Hook {hook} gives activations of shape {tuple(act.shape)} for {batch}×{length} tokens, "
            "not [batch, position, ...]; only per-token hooks can be cached."
        )


def _check_resume(job: dict, expected: dict, layout: CacheLayout, folder: Path) -> None:
    differing = [k for k in _FINGERPRINT_KEYS if job.get(k) != expected.get(k)]
    if layout_from_job(job) != layout:
        differing.append("layout (batch_size / chunk_rows / shard_tokens)")
    if differing:
        raise ResumeMismatchError(
            f"Cannot resume {folder}: it was started with different {', '.join(differing)}. "
            "Resume with the original model, corpus, hooks, dtype and batch settings, or delete "
            f"{folder} (or choose another output path) to start a new cache."
        )


class _ShardWriter(threading.Thread):
    """Background thread: collects per-batch activations and writes each shard when it is full."""

    def __init__(self, folder: Path, layout: CacheLayout, storage_dtype: str, fail_hint: str):
        super().__init__(daemon=True, name="activations-cache-writer")
        self.folder, self.layout, self.dtype, self.fail_hint = (
            folder,
            layout,
            storage_dtype,
            fail_hint,
        )
        self.inbox: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None

    def run(self) -> None:
        parts: dict[str, list[np.ndarray]] = {}
        while (item := self.inbox.get()) is not None:
            if self.error is not None:
                continue  # drain so the producer never blocks
            shard, acts, last_in_shard = item
            try:
                for hook, act in acts.items():
                    parts.setdefault(hook, []).append(
                        encode(act.reshape(act.shape[0] * act.shape[1], -1), self.dtype)
                    )
                if last_in_shard:
                    stored = {hook: np.concatenate(chunks) for hook, chunks in parts.items()}
                    parts = {}
                    write_shard(self.folder, shard, stored, self.dtype, self.layout.chunk_rows)
            except BaseException as error:  # reported to the producer, which raises it
                self.error = error

    def put(self, item: Any) -> None:
        self.raise_if_failed()
        self.inbox.put(item)

    def raise_if_failed(self) -> None:
        if self.error is None:
            return
        error = self.error
        disk_full = isinstance(error, OSError) and (
            error.errno == errno.ENOSPC or "space" in str(error).lower()
        )
        reason = "the disk is full" if disk_full else f"{type(error).__name__}: {error}"
        raise CacheWriteError(
            f"Writing activations to {self.folder} failed ({reason}). Finished shards are kept: "
            f"{'free some space, then ' if disk_full else ''}{self.fail_hint}"
        ) from error


def write_cache(
    path: str | os.PathLike,
    model: Any,
    tokens: np.ndarray,
    hooks: list[str],
    *,
    dtype: str = "float32",
    batch_size: int = 8,
    attrs: Mapping[str, Any] | None = None,
    token_metadata: Mapping[str, np.ndarray] | None = None,
    resume: bool = False,
    progress: bool = True,
    chunk_rows: int = 1024,
    shard_tokens: int = 32768,
    compile: bool | str = "auto",
) -> Path:
    """Cache `hooks` activations of `model` on `tokens` [n_contexts, context_len] into HDF5 at `path`.

    Args:
        model: a TransformerLens HookedTransformer (any per-token hook), a Hugging Face Llama-like
            decoder (residual hooks only, faster), or a source from `activations_cache.sources`.
        tokens: int array [n_contexts, context_len]; each row is one forward context (no BOS added).
        hooks: hook names, e.g. ["blocks.15.hook_resid_post"]; the forward stops after the last.
        dtype: storage dtype, "float32" | "float16" | "bfloat16" (compute stays in the model's dtype).
        batch_size: contexts per forward.
        attrs: caller metadata stored as file attributes (model name, corpus description, seed, …);
            part of the resume fingerprint.
        token_metadata: per-token arrays [n_contexts, context_len] stored flat as `meta/<name>`.
        resume: continue an unfinished cache at `path` (its inputs must match); without it an
            unfinished cache is an error. A complete cache is never rewritten.
        chunk_rows / shard_tokens: ≈ rows per HDF5 chunk / tokens per shard (rounded to whole
            contexts and batches; see `shards.CacheLayout`).
        compile: run the forward through `torch.compile` (sources with `compile_for`: the HF
            backend). "auto" compiles when the job has ≥ `COMPILE_MIN_TOKENS` tokens, where the
            one-time compile (~10–25 s on CPU) is repaid, and falls back to eager with a warning if
            compiling fails; True compiles (a failure is an error); False never does.

    Returns the path of the complete cache.
    """
    path = Path(path)
    tokens = np.asarray(tokens)
    metadata = {k: np.asarray(v) for k, v in (token_metadata or {}).items()}
    attrs = dict(attrs or {})
    check_storage_dtype(dtype)
    clash = sorted(set(attrs) & RESERVED_ATTRS)
    if clash:
        raise ValueError(f"attrs {clash} are written by activations_cache itself; rename them.")
    source = make_source(model, list(hooks))
    _validate(tokens, metadata, batch_size, source.max_context)
    rank, world_size = _dist()
    folder = partial_dir(path)
    fail_hint = "rerun the same command with --resume (Python: resume=True) to continue."

    layout = CacheLayout.plan(
        tokens.shape[0], tokens.shape[1], batch_size, chunk_rows, shard_tokens
    )
    _configure_compile(source, compile, layout)
    expected = {
        "format_version": FORMAT_VERSION,
        "hooks": list(hooks),
        "d_model": _probe(source, tokens),
        "storage_dtype": dtype,
        "n_contexts": int(tokens.shape[0]),
        "context_len": int(tokens.shape[1]),
        "tokens_sha256": sha256_array(tokens.astype(np.int32)),
        "metadata_sha256": {k: sha256_array(v) for k, v in sorted(metadata.items())},
        "model_weights_sha256": source.weights_sha256(),
        "backend": source.backend,
        "source": source.describe(),
        "attrs": _jsonable(attrs),
        "layout": layout_to_job(layout),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if path.exists():
        raise CacheExistsError(
            f"{path} already exists; a finished cache is never opened for writing again. "
            "Write to a new path, or delete the file to rebuild it."
        )
    unfinished = (folder / JOB_FILE).exists()
    _check_partial_is_ours(folder, unfinished)
    _barrier(world_size)  # every rank looks before rank 0 may create the folder
    if unfinished:
        if not resume:
            done = len(finished_shards(folder))
            raise CacheExistsError(
                f"An unfinished cache is at {folder} ({done} of {layout.n_shards} shards written). "
                f"Rerun with --resume (Python: resume=True) to continue it, or delete {folder} to start over."
            )
        job = read_job(folder)
        _check_resume(job, expected, layout, folder)
        expected["created_at"] = job["created_at"]
    elif rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / JOB_FILE, expected)
    if rank == 0:
        remove_stale_temporaries(folder)
    _barrier(world_size)

    todo = [
        s
        for s in range(layout.n_shards)
        if s % world_size == rank and s not in finished_shards(folder)
    ]
    _compute_shards(source, tokens, layout, folder, dtype, todo, fail_hint, progress and rank == 0)
    _barrier(world_size)
    if rank == 0:
        try:
            merge_shards(folder, path, expected, tokens, metadata)
        except OSError as error:
            raise CacheWriteError(
                f"Merging the shards of {folder} into {path} failed ({error}); "
                f"shards are kept: {fail_hint}"
            ) from error
        shutil.rmtree(folder)
    _barrier(world_size)
    return path


def _check_partial_is_ours(folder: Path, unfinished: bool) -> None:
    """A `PATH.h5.partial` this writer did not make is refused, never filled or deleted: it must
    be absent, empty, or hold a job.json with this format's fields."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise CacheExistsError(
            f"{folder} is a file; move it away (the cache writes a folder there)."
        )
    foreign = not unfinished and any(folder.iterdir())
    if unfinished:
        try:
            job = read_job(folder)
            foreign = (
                not isinstance(job, dict) or "format_version" not in job or "layout" not in job
            )
        except (OSError, ValueError):
            foreign = True
    if foreign:
        raise CacheExistsError(
            f"{folder} holds files the cache writer did not make; move them away or choose "
            "another cache path (the unfinished-cache folder is PATH.partial)."
        )


def _configure_compile(source: Any, compile: bool | str, layout: CacheLayout) -> None:
    """Turn on the source's compiled forward if `compile` asks for it (see `write_cache`)."""
    if compile not in (True, False, "auto"):
        raise ValueError(f"compile must be True, False or 'auto'; got {compile!r}.")
    if not hasattr(source, "compile_for"):
        if compile is True:
            raise ValueError(
                f"The {source.backend} backend has no compiled forward; use the Hugging Face "
                "backend (residual-stream hooks of an HF model) or compile=False."
            )
        return
    if compile is True or (compile == "auto" and layout.n_tokens >= COMPILE_MIN_TOKENS):
        source.compile_for(layout.batch_size, layout.context_len, fallback=compile == "auto")


def _compute_shards(
    source: Any,
    tokens: np.ndarray,
    layout: CacheLayout,
    folder: Path,
    dtype: str,
    todo: list[int],
    fail_hint: str,
    progress: bool,
) -> None:
    """Forward every batch of the shards in `todo`, handing activations to the writer thread."""
    writer = _ShardWriter(folder, layout, dtype, fail_hint)
    writer.start()
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        n_contexts = sum(c1 - c0 for c0, c1 in map(layout.shard_contexts_range, todo))
        bar = tqdm(total=n_contexts * layout.context_len, unit="tok", desc="caching")
        if getattr(source, "compiled", None) is not None:
            bar.set_postfix_str("compiling the forward (once, ~10–25 s)")
    try:
        for shard in todo:
            c0, c1 = layout.shard_contexts_range(shard)
            for b0 in range(c0, c1, layout.batch_size):
                b1 = min(b0 + layout.batch_size, c1)
                acts = source(torch.as_tensor(tokens[b0:b1], dtype=torch.long))
                for hook in source.hooks:
                    _check_per_token(hook, acts[hook], b1 - b0, layout.context_len)
                writer.put((shard, {h: acts[h].detach() for h in source.hooks}, b1 == c1))
                if bar is not None:
                    bar.set_postfix_str("")
                    bar.update((b1 - b0) * layout.context_len)
    finally:
        writer.inbox.put(None)
        writer.join()
        if bar is not None:
            bar.close()
    writer.raise_if_failed()


def _jsonable(value: Any) -> Any:
    """Attrs normalised through JSON (so a fresh run and a resumed one compare equal)."""
    import json

    return json.loads(json.dumps(value, sort_keys=True, default=str))
