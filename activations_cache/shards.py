"""How an unfinished cache lives on disk while it is written: a folder of whole shards.

    PATH.h5.partial/
        job.json               what the cache is made of (checked again on resume) and its layout
        shard-000000.h5        contexts [c0, c1) of shard 0: acts/<hook>, norms/<hook>, sum/<hook>,
        shard-000001.h5        checksums/<hook> — each written to a temporary name and renamed, so a
        ...                    shard file either exists whole or not at all

The shards' norms and sums feed the merged file's stats/<hook>; the merged file keeps neither.

Layout: contexts are cut into shards of `shard_contexts` contexts, a multiple of both the forward
`batch_size` and `contexts_per_chunk` (chunk_rows = contexts_per_chunk · context_len). So a resumed
run recomputes exactly the same batches as an uninterrupted one, and chunk checksums never straddle
shards. Shard s covers contexts [s·shard_contexts, min((s+1)·shard_contexts, n_contexts)).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from activations_cache.format import chunk_checksums, decode

JOB_FILE = "job.json"


@dataclass(frozen=True)
class CacheLayout:
    """Row/context arithmetic of one cache (rows = tokens)."""

    n_contexts: int
    context_len: int
    batch_size: int
    contexts_per_chunk: int
    shard_contexts: int

    @classmethod
    def plan(
        cls, n_contexts: int, context_len: int, batch_size: int, chunk_rows: int, shard_tokens: int
    ) -> CacheLayout:
        """Choose chunks of ≈`chunk_rows` rows (whole contexts) and shards of ≈`shard_tokens` tokens."""
        per_chunk = max(1, round(chunk_rows / context_len))
        unit = math.lcm(batch_size, per_chunk)
        shard = unit * max(1, round(shard_tokens / (unit * context_len)))
        return cls(n_contexts, context_len, batch_size, per_chunk, shard)

    @property
    def n_tokens(self) -> int:
        return self.n_contexts * self.context_len

    @property
    def chunk_rows(self) -> int:
        """Rows per HDF5 chunk and per checksum block (≤ n_tokens)."""
        return min(self.contexts_per_chunk * self.context_len, self.n_tokens)

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_contexts / self.shard_contexts)

    def shard_contexts_range(self, shard: int) -> tuple[int, int]:
        """Contexts [c0, c1) of shard `shard`."""
        c0 = shard * self.shard_contexts
        return c0, min(c0 + self.shard_contexts, self.n_contexts)


def partial_dir(path: Path) -> Path:
    """The folder of an unfinished cache `path`."""
    return path.with_name(path.name + ".partial")


def shard_path(folder: Path, shard: int) -> Path:
    return folder / f"shard-{shard:06d}.h5"


def finished_shards(folder: Path) -> set[int]:
    """Indices of shards whose file exists under its final name (written whole, then renamed)."""
    return {int(p.stem.split("-")[1]) for p in folder.glob("shard-*.h5")}


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def read_job(folder: Path) -> dict:
    return json.loads((folder / JOB_FILE).read_text())


def layout_from_job(job: dict) -> CacheLayout:
    return CacheLayout(**job["layout"])


def layout_to_job(layout: CacheLayout) -> dict:
    return asdict(layout)


def write_shard(
    folder: Path, shard: int, acts: dict[str, np.ndarray], storage_dtype: str, chunk_rows: int
) -> None:
    """Write one shard whole: acts [rows, d] per hook in storage dtype, plus norms, sums, checksums.

    norms[i] = ‖decode(acts[i])‖₂ (float32), sum = Σ_i decode(acts[i]) (float64 [d]).
    """
    final = shard_path(folder, shard)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as file:
            file.attrs["shard"] = shard
            for hook, stored in acts.items():
                values = decode(stored, storage_dtype)
                file.create_dataset(f"acts/{hook}", data=stored)
                file.create_dataset(
                    f"norms/{hook}", data=np.linalg.norm(values, axis=1).astype(np.float32)
                )
                file.create_dataset(f"sum/{hook}", data=values.sum(axis=0, dtype=np.float64))
                file.create_dataset(
                    f"checksums/{hook}",
                    data=np.array(chunk_checksums(stored, chunk_rows), dtype="S64"),
                )
        fsync_path(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files a killed writer left behind (they were never renamed, so never counted)."""
    for stale in folder.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
