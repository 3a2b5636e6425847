"""The on-disk contract of an activation cache: names, dtypes, checksums, errors.

A finished cache is one HDF5 file (see docs/cache_format.md for the full description), format 2:

    tokens                     [n_tokens] int32              token ids, context after context
    meta/position              [n_tokens] int32              position of the token in its context
    meta/<name>                [n_tokens]                    per-token metadata given by the caller
    acts/<hook>                [n_tokens, d_model] storage   chunked by `chunk_rows` rows, uncompressed
    stats/<hook>/mean          [d_model] float64             mean of the stored rows (decoded to fp32)
    checksums/<hook>           [n_chunks] S64                sha256 hex of each chunk's stored bytes

Chunk c of a hook covers rows [c·chunk_rows, min((c+1)·chunk_rows, n_tokens)); its checksum is
sha256(acts[rows].tobytes()) in the storage dtype, C order, little-endian.

`tokens` and `meta/*` are stored with HDF5's shuffle + gzip level 1 filters (read transparently by
any h5py) in chunks of min(n_tokens, max(chunk_rows, 65536)) rows; `acts` stays uncompressed so a
random chunk read is one plain read. Row norms ‖x_i‖₂ are computed from `acts` when asked for
(format 1 files stored them as `norms/<hook>` [n_tokens] float32 and are still read).

bfloat16 has no HDF5 type: it is stored as uint16 holding the upper 16 bits of the float32 pattern
(`storage_dtype` attribute "bfloat16"); decode with `(u16.astype(np.uint32) << 16).view(np.float32)`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch

FORMAT_NAME = "saesteer-activations-cache"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # format 1 also stored norms/<hook> and uncompressed tokens/meta
PER_TOKEN_CHUNK_ROWS = 65536  # rows per chunk of tokens and meta/* (at least chunk_rows)
STORAGE_DTYPES = ("float32", "float16", "bfloat16")
JSON_ATTRS_KEY = "json_attrs"
# Root attributes written by the library (callers' attrs may not use these names).
RESERVED_ATTRS = frozenset(
    {
        "format",
        "format_version",
        "complete",
        "n_tokens",
        "n_contexts",
        "context_len",
        "chunk_rows",
        "batch_size",
        "hooks",
        "d_model",
        "storage_dtype",
        "tokens_sha256",
        "metadata_sha256",
        "model_weights_sha256",
        "backend",
        "source",
        "library_versions",
        "created_at",
        "completed_at",
        JSON_ATTRS_KEY,
    }
)


class CacheError(RuntimeError):
    """Base class of every error raised by activations_cache."""


class IncompleteCacheError(CacheError):
    """The cache was not finished (a run was killed or failed); resume it."""


class CorruptCacheError(CacheError):
    """The file is unreadable or its bytes no longer match their checksums."""


class CacheExistsError(CacheError):
    """A complete cache is never opened for writing again."""


class ResumeMismatchError(CacheError):
    """`resume` was asked with inputs that differ from those the unfinished cache was started with."""


class CacheWriteError(CacheError):
    """Writing failed (e.g. the disk is full); completed shards are kept and the run can resume."""


def check_storage_dtype(dtype: str) -> str:
    """Validate a storage dtype name ('float32' | 'float16' | 'bfloat16')."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(
            f"Unknown storage dtype {dtype!r}; use one of {', '.join(STORAGE_DTYPES)}."
        )
    return dtype


def numpy_storage_dtype(dtype: str) -> np.dtype:
    """The numpy/HDF5 dtype that holds `dtype` on disk (bfloat16 → uint16 bit pattern)."""
    return np.dtype(
        {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}[check_storage_dtype(dtype)]
    )


def encode(acts: torch.Tensor, dtype: str) -> np.ndarray:
    """acts [n, d] (any float dtype, CPU or GPU) → numpy array [n, d] in the storage dtype."""
    if dtype == "bfloat16":
        return acts.to(torch.bfloat16).cpu().view(torch.int16).numpy().view(np.uint16)
    return acts.to({"float32": torch.float32, "float16": torch.float16}[dtype]).cpu().numpy()


def decode(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Storage array [n, d] → float32 numpy array [n, d] (exact: every stored value is a float32)."""
    if dtype == "bfloat16":
        bits = stored.astype(np.uint32)
        bits <<= 16
        return bits.view(np.float32)
    return stored.astype(np.float32, copy=False)


def sha256_array(array: np.ndarray) -> str:
    """Hex sha256 of an array's bytes (C order, as stored)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def chunk_checksums(stored: np.ndarray, chunk_rows: int) -> list[str]:
    """sha256 hex of each block of `chunk_rows` rows of `stored` [n, d] (the last may be shorter)."""
    return [sha256_array(stored[i : i + chunk_rows]) for i in range(0, len(stored), chunk_rows)]


def write_attrs(node: Any, attrs: dict[str, Any]) -> None:
    """Store attrs on an h5py node; dicts/lists (and None) go in as JSON strings listed in `json_attrs`."""
    encoded = json.loads(node.attrs.get(JSON_ATTRS_KEY, "[]"))
    for key, value in attrs.items():
        if isinstance(value, dict | list | tuple) or value is None:
            node.attrs[key] = json.dumps(value, sort_keys=True, default=str)
            encoded.append(key)
        else:
            node.attrs[key] = value
    node.attrs[JSON_ATTRS_KEY] = json.dumps(sorted(set(encoded)))


def read_attrs(node: Any) -> dict[str, Any]:
    """Inverse of `write_attrs`: attrs as Python values (numpy scalars become Python scalars)."""
    json_keys = set(json.loads(node.attrs.get(JSON_ATTRS_KEY, "[]")))
    out: dict[str, Any] = {}
    for key, value in node.attrs.items():
        if key == JSON_ATTRS_KEY:
            continue
        if key in json_keys:
            out[key] = json.loads(value)
        elif isinstance(value, np.generic):
            out[key] = value.item()
        elif isinstance(value, bytes):
            out[key] = value.decode()
        else:
            out[key] = value
    return out


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the bytes of a cache."""
    import importlib.metadata as metadata

    import h5py

    versions = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
    }
    for package in ("saesteer", "transformer-lens", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
