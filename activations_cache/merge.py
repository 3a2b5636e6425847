"""Merge a folder of finished shards into the final single-file cache (atomically).

The final file is written under a temporary name in the same folder, its `complete` attribute is
set last, it is fsynced, then renamed to PATH.h5: PATH.h5 exists only when whole. Every shard's
chunk checksums are recomputed while copying, so a shard damaged on disk is caught here.

`tokens` and `meta/*` are written with shuffle + gzip level 1 in chunks of
min(n_tokens, max(chunk_rows, PER_TOKEN_CHUNK_ROWS)) rows; `acts/<hook>` is copied uncompressed.
The shards' per-row norms feed the stats below and are not copied (format 2 has no `norms/<hook>`).
The file uses HDF5 1.10 object formats (libver "v110": ~11 KB of fixed metadata instead of ~27 KB
with the 1.0 formats), readable by HDF5 ≥ 1.10, i.e. by every h5py 3.

Stats per hook (over all n stored rows x_i, decoded to float32):
    mean        = (1/n) Σ x_i                        [d] float64
    mean_norm   = (1/n) Σ ‖x_i‖₂,  mean_sq_norm = (1/n) Σ ‖x_i‖₂²
    norm_quantiles at NORM_QUANTILE_LEVELS of {‖x_i‖₂}
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np

from activations_cache.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    PER_TOKEN_CHUNK_ROWS,
    CorruptCacheError,
    chunk_checksums,
    library_versions,
    numpy_storage_dtype,
    write_attrs,
)
from activations_cache.shards import fsync_path, layout_from_job, shard_path

NORM_QUANTILE_LEVELS = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def merge_shards(
    folder: Path, path: Path, job: dict, tokens: np.ndarray, metadata: dict[str, np.ndarray]
) -> None:
    """Write PATH from the shards in `folder` and the in-memory tokens [n_ctx, L] and metadata."""
    layout = layout_from_job(job)
    n, rows = layout.n_tokens, layout.chunk_rows
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w", libver=("v110", "v110")) as file:
            per_token = {
                "tokens": tokens.astype(np.int32),
                "meta/position": np.tile(
                    np.arange(layout.context_len, dtype=np.int32), layout.n_contexts
                ),
                **{f"meta/{name}": values for name, values in metadata.items()},
            }
            for name, values in per_token.items():
                file.create_dataset(
                    name,
                    data=values.reshape(-1),
                    chunks=(min(n, max(rows, PER_TOKEN_CHUNK_ROWS)),),
                    shuffle=True,
                    compression="gzip",
                    compression_opts=1,
                )
            for hook in job["hooks"]:
                _merge_hook(file, folder, layout, hook, job["d_model"][hook], job["storage_dtype"])
            write_attrs(
                file,
                {
                    **job["attrs"],
                    "format": FORMAT_NAME,
                    "format_version": FORMAT_VERSION,
                    "n_tokens": n,
                    "n_contexts": layout.n_contexts,
                    "context_len": layout.context_len,
                    "chunk_rows": rows,
                    "batch_size": layout.batch_size,
                    "hooks": job["hooks"],
                    "d_model": job["d_model"],
                    "storage_dtype": job["storage_dtype"],
                    "tokens_sha256": job["tokens_sha256"],
                    "metadata_sha256": job["metadata_sha256"],
                    "model_weights_sha256": job["model_weights_sha256"],
                    "backend": job["backend"],
                    "source": job["source"],
                    "library_versions": library_versions(),
                    "created_at": job["created_at"],
                    "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
            file.attrs["complete"] = True
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _merge_hook(
    file: h5py.File, folder: Path, layout, hook: str, d: int, storage_dtype: str
) -> None:
    """Copy acts of `hook` from every shard, verifying checksums; write stats from the shards' norms."""
    n, rows = layout.n_tokens, layout.chunk_rows
    acts = file.create_dataset(
        f"acts/{hook}", shape=(n, d), dtype=numpy_storage_dtype(storage_dtype), chunks=(rows, d)
    )
    norms = np.empty(n, dtype=np.float32)
    total = np.zeros(d, dtype=np.float64)
    checksums: list[bytes] = []
    for shard in range(layout.n_shards):
        c0, c1 = layout.shard_contexts_range(shard)
        r0, r1 = c0 * layout.context_len, c1 * layout.context_len
        source = shard_path(folder, shard)
        with h5py.File(source, "r") as part:
            stored = part[f"acts/{hook}"][()]
            recorded = list(part[f"checksums/{hook}"][()])
            if (
                stored.shape != (r1 - r0, d)
                or [c.encode() for c in chunk_checksums(stored, rows)] != recorded
            ):
                raise CorruptCacheError(
                    f"Shard {source} does not match its checksums (damaged on disk). Delete that "
                    "file and rerun with --resume (resume=True) to recompute it."
                )
            acts[r0:r1] = stored
            norms[r0:r1] = part[f"norms/{hook}"][()]
            total += part[f"sum/{hook}"][()]
            checksums.extend(recorded)
    file.create_dataset(f"checksums/{hook}", data=np.array(checksums, dtype="S64"))
    stats = file.create_group(f"stats/{hook}")
    stats.create_dataset("mean", data=total / n)
    stats.attrs["mean_norm"] = float(norms.astype(np.float64).mean())
    stats.attrs["mean_sq_norm"] = float(np.square(norms.astype(np.float64)).mean())
    stats.attrs["norm_quantile_levels"] = np.array(NORM_QUANTILE_LEVELS)
    stats.attrs["norm_quantiles"] = np.quantile(norms, NORM_QUANTILE_LEVELS)
