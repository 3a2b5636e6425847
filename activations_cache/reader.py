"""Read a finished cache: sequential, shuffled (for training), random access, stats.

Every read is of whole chunks (chunk_rows rows), and each chunk's sha256 is checked the first time
this reader reads it (`verify_reads=True`), so corruption is reported, never silently trained on.

What is verified, and when (`verify_reads=True`, the default; `CorruptCacheError` on a mismatch):
    opening          the header: format, version, complete flag, every attribute the reader needs,
                     the datasets of every hook, and their shapes against n_tokens/chunk_rows
    acts/<hook>      each chunk against its sha256 (`checksums/<hook>`) at its first read
    tokens, meta/*   against `tokens_sha256` / `metadata_sha256` at their first read (meta/position
                     against the positions it must hold)
    stats/<hook>     no checksum is stored for it (the writer records none): only `verify()`
                     (`open_cache(verify=True)`) checks it, by recomputing it from the acts
    attributes       caller attrs (model name, corpus, …) are covered by no checksum
`verify()` checks all of the above at once, reading the whole file. With `verify_reads=False`
nothing is checked after opening.

Shuffled order for (seed, epoch): the chunk order is a permutation π = perm_{seed,epoch}(n_chunks);
consecutive groups of `window_chunks` chunks of π form windows; each window's rows are permuted
with perm_{seed,epoch,w}; the epoch's row stream is the concatenation of the permuted windows and
batch b is stream[b·B, (b+1)·B). Every token appears exactly once per epoch; a batch mixes rows
of up to 2·window_chunks random chunks. `start_batch` skips whole windows without reading them.
A window's chunks are read, in the storage dtype, into one buffer reused for every window; each
batch is then one gather `buffer[perm_w[i:j]]` (per window it spans) into a new array, decoded to
float32 (no copy for float32 storage), so no batch is a view into the reused buffer.

DDP: with `rank`/`world_size`, rank r yields rows [⌊r·m/W⌋, ⌊(r+1)·m/W⌋) of each global batch of
m rows (m = B except possibly the last batch): the ranks' slices are disjoint, their union is the
global batch, and every rank sees the same number of batches. A rank gathers only its own rows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from activations_cache.format import (
    FORMAT_NAME,
    READABLE_VERSIONS,
    STORAGE_DTYPES,
    CorruptCacheError,
    IncompleteCacheError,
    decode,
    read_attrs,
    sha256_array,
)
from activations_cache.shards import finished_shards, partial_dir, read_job

# Root attributes every finished cache has and this reader needs (see activations_cache.format).
REQUIRED_ATTRS = (
    "hooks",
    "n_tokens",
    "n_contexts",
    "context_len",
    "chunk_rows",
    "storage_dtype",
    "tokens_sha256",
    "metadata_sha256",
)
STATS_ATTRS = ("mean_norm", "mean_sq_norm", "norm_quantile_levels", "norm_quantiles")


def open_cache(
    path: str | os.PathLike, *, verify: bool = False, verify_reads: bool = True
) -> CacheReader:
    """Open a finished cache for reading; refuse an unfinished or damaged one with the fix.

    verify: check every chunk checksum, the tokens, metadata and stats now, reading the whole file.
    verify_reads: check each chunk's checksum, and the tokens and each metadata array, the first
    time they are read (cheap: ~2 GB/s sha256). See the module docstring for what is covered.
    """
    reader = CacheReader(Path(path), verify_reads=verify_reads)
    if verify:
        reader.verify()
    return reader


class CacheReader:
    """A read-only view of one cache file (see activations_cache.format for the layout)."""

    def __init__(self, path: Path, verify_reads: bool = True):
        self.path = path
        self.verify_reads = verify_reads
        self._verified: set[tuple[str, int]] = set()
        self._check_finished()
        try:
            # Every read is of whole chunks, read once: HDF5's chunk cache would only add a copy.
            self.file = h5py.File(path, "r", rdcc_nbytes=0)
        except OSError as error:
            raise CorruptCacheError(
                f"{path} is not a readable HDF5 file ({error}); it is truncated or damaged. "
                "Delete it and rebuild it with `saesteer cache ...`."
            ) from None
        try:
            self.attrs = read_attrs(self.file)
        except ValueError as error:  # a JSON-encoded attribute that no longer parses
            raise CorruptCacheError(
                f"{path} has a damaged attribute ({error}); delete it and rebuild it with "
                "`saesteer cache ...`."
            ) from None
        self._check_header()
        self.hooks: list[str] = list(self.attrs["hooks"])
        self.n_tokens: int = int(self.attrs["n_tokens"])
        self.chunk_rows: int = int(self.attrs["chunk_rows"])
        self.n_chunks: int = math.ceil(self.n_tokens / self.chunk_rows)
        self.storage_dtype: str = self.attrs["storage_dtype"]
        self._checksums = {h: self.file[f"checksums/{h}"][()] for h in self.hooks}
        self._check_shapes()
        self._verified_per_token: set[str] = set()  # "tokens", "meta/<name>" checked so far

    def _check_finished(self) -> None:
        folder = partial_dir(self.path)
        if not self.path.exists() and (folder / "job.json").exists():
            job = read_job(folder)
            total = math.ceil(job["n_contexts"] / job["layout"]["shard_contexts"])
            raise IncompleteCacheError(
                f"{self.path} is unfinished ({len(finished_shards(folder))} of {total} shards in "
                f"{folder}). Finish it by rerunning the same `saesteer cache` command with --resume "
                "(Python: write_cache(..., resume=True))."
            )
        if not self.path.exists():
            raise FileNotFoundError(
                f"No cache at {self.path}; create one with `saesteer cache --out {self.path} ...`."
            )

    def _check_header(self) -> None:
        if self.attrs.get("format") != FORMAT_NAME:
            raise CorruptCacheError(
                f"{self.path} is not an activations cache (no format={FORMAT_NAME!r} attribute)."
            )
        if self.attrs.get("format_version") not in READABLE_VERSIONS:
            raise CorruptCacheError(
                f"{self.path} has format version {self.attrs.get('format_version')}; this library "
                f"reads versions {list(READABLE_VERSIONS)} (a newer file needs a newer saesteer)."
            )
        if not self.attrs.get("complete", False):
            raise IncompleteCacheError(
                f"{self.path} is marked incomplete; rebuild it with `saesteer cache` "
                "(or --resume the run that made it)."
            )
        absent = [name for name in REQUIRED_ATTRS if name not in self.attrs]
        if absent:
            raise CorruptCacheError(
                f"{self.path} lacks the attribute(s) {', '.join(absent)} that every cache has: "
                "its metadata is damaged. Delete it and rebuild it with `saesteer cache`."
            )
        kinds = {
            "hooks": (list, "a list of hook names"),
            "metadata_sha256": (dict, "a mapping of metadata names to sha256"),
            "tokens_sha256": (str, "a sha256 hex string"),
            "storage_dtype": (str, f"one of {list(STORAGE_DTYPES)}"),
        }
        for name in ("n_tokens", "n_contexts", "context_len", "chunk_rows"):
            kinds[name] = (int, "a positive integer")
        for name, (kind, meaning) in kinds.items():
            value = self.attrs[name]
            if (
                not isinstance(value, kind)
                or (kind is int and value < 1)
                or (name == "storage_dtype" and value not in STORAGE_DTYPES)
                or (name == "hooks" and not value)
            ):
                raise CorruptCacheError(
                    f"{self.path}: attribute {name} is {value!r}, not {meaning}; its metadata is "
                    "damaged. Delete it and rebuild it with `saesteer cache`."
                )
        missing = [
            name
            for h in self.attrs["hooks"]
            for name in (f"acts/{h}", f"checksums/{h}")
            if name not in self.file
        ]
        missing += [name for name in ("tokens",) if name not in self.file]
        if missing:
            raise CorruptCacheError(
                f"{self.path} lacks the dataset(s) {', '.join(missing)}; it is damaged. "
                "Delete it and rebuild it with `saesteer cache`."
            )

    def _check_shapes(self) -> None:
        """Datasets whose lengths disagree with n_tokens / chunk_rows are damage, not data."""
        n_contexts, length = int(self.attrs["n_contexts"]), int(self.attrs["context_len"])
        wrong = []
        if n_contexts * length != self.n_tokens:
            wrong.append(
                f"n_contexts × context_len = {n_contexts} × {length} ≠ n_tokens {self.n_tokens}"
            )
        if self.file["tokens"].shape != (self.n_tokens,):
            wrong.append(f"tokens has shape {self.file['tokens'].shape}, not ({self.n_tokens},)")
        for hook in self.hooks:
            acts, sums = self.file[f"acts/{hook}"], self._checksums[hook]
            if acts.ndim != 2 or acts.shape[0] != self.n_tokens:
                wrong.append(f"acts/{hook} has shape {acts.shape}, not ({self.n_tokens}, d)")
            if sums.shape != (self.n_chunks,):
                wrong.append(f"checksums/{hook} holds {sums.size} entries, not {self.n_chunks}")
        if wrong:
            raise CorruptCacheError(
                f"{self.path} is inconsistent ({'; '.join(wrong)}); it is damaged. "
                "Delete it and rebuild it with `saesteer cache`."
            )

    # ------------------------------------------------------------------ metadata

    def d_model(self, hook: str) -> int:
        return int(self._acts(hook).shape[1])

    @property
    def tokens(self) -> np.ndarray:
        """Token ids [n_tokens] int32 (checked against `tokens_sha256` at the first read)."""
        tokens = self._read_per_token("tokens")
        if self.verify_reads and "tokens" not in self._verified_per_token:
            self._verify_per_token("tokens", tokens)
        return tokens

    def metadata(self, name: str) -> np.ndarray:
        """Per-token metadata [n_tokens] (`position`, and the caller's, e.g. `doc_id`, `special_mask`),
        checked at the first read like `tokens`; KeyError naming those the cache has for another name."""
        key = f"meta/{name}"
        if key not in self.file:
            if name == "position" or name in self.attrs["metadata_sha256"]:
                raise CorruptCacheError(
                    f"{self.path} lacks the dataset {key} it was written with; it is damaged. "
                    "Delete it and rebuild it with `saesteer cache`."
                )
            raise KeyError(
                f"{self.path} has no per-token metadata {name!r}; it has "
                f"{['position', *self.attrs['metadata_sha256']]}."
            )
        values = self._read_per_token(key)
        if self.verify_reads and key not in self._verified_per_token:
            self._verify_per_token(key, values)
        return values

    def _read_per_token(self, key: str) -> np.ndarray:
        """Dataset `key` ([n_tokens]) whole; CorruptCacheError when HDF5 cannot decode it."""
        try:
            values = self.file[key][()]
        except OSError as error:
            raise CorruptCacheError(
                f"{self.path}: {key} cannot be read ({error}); the file is damaged. "
                "Delete it and rebuild it with `saesteer cache`."
            ) from None
        if values.shape != (self.n_tokens,):
            raise CorruptCacheError(
                f"{self.path}: {key} has shape {values.shape}, not ({self.n_tokens},); "
                "the file is damaged. Delete it and rebuild it with `saesteer cache`."
            )
        return values

    def _verify_per_token(self, key: str, values: np.ndarray) -> None:
        """Check tokens / meta/<name> against the checksum the writer recorded (meta/position
        against the positions 0..context_len−1 of every context)."""
        n_ctx, length = int(self.attrs["n_contexts"]), int(self.attrs["context_len"])
        name = key.removeprefix("meta/")
        if key == "tokens":
            ok = sha256_array(values.reshape(n_ctx, length)) == self.attrs["tokens_sha256"]
        elif name == "position":
            ok = np.array_equal(values, np.tile(np.arange(length, dtype=values.dtype), n_ctx))
        elif name in self.attrs["metadata_sha256"]:
            digest = self.attrs["metadata_sha256"][name]
            ok = sha256_array(values.reshape(n_ctx, length)) == digest
        else:
            ok = True  # written without a checksum: nothing to check against
        if not ok:
            raise CorruptCacheError(
                f"{self.path}: {key} does not match its checksum; the file is damaged. "
                "Delete it and rebuild it with `saesteer cache`."
            )
        self._verified_per_token.add(key)

    def rows_from_position(self, skip_positions: int) -> np.ndarray | None:
        """The `rows` mask that leaves out the first `skip_positions` tokens of every context
        (`meta/position` ≥ skip_positions); None (every row) for 0."""
        length = int(self.attrs["context_len"])
        if not 0 <= skip_positions < length:
            raise ValueError(
                f"skip_positions must be in [0, context_len={length}); got {skip_positions}."
            )
        return self.metadata("position") >= skip_positions if skip_positions else None

    def n_batches(self, batch_size: int) -> int:
        return math.ceil(self.n_tokens / batch_size)

    def stats(self, hook: str) -> dict[str, Any]:
        """{'mean': tensor [d] float32, 'mean_norm', 'mean_sq_norm', 'norm_quantiles': {q: value}}.

        Stored at write time without a checksum: only `verify()` checks them (module docstring)."""
        key = f"stats/{self._check_hook(hook)}"
        group = self.file.get(key)
        absent = (
            [key]
            if not isinstance(group, h5py.Group)
            else [f"{key}/mean"] * ("mean" not in group)
            + [f"{key} attribute {a}" for a in STATS_ATTRS if a not in group.attrs]
        )
        if absent:
            raise CorruptCacheError(
                f"{self.path} lacks {', '.join(absent)}; its stats are damaged. "
                "Delete it and rebuild it with `saesteer cache`."
            )
        levels = group.attrs["norm_quantile_levels"]
        quantiles = group.attrs["norm_quantiles"]
        if np.shape(levels) != np.shape(quantiles):
            raise CorruptCacheError(
                f"{self.path}: {key} has {np.size(levels)} quantile levels but "
                f"{np.size(quantiles)} quantiles; delete it and rebuild it with `saesteer cache`."
            )
        return {
            "mean": torch.from_numpy(group["mean"][()].astype(np.float32)),
            "mean_norm": float(group.attrs["mean_norm"]),
            "mean_sq_norm": float(group.attrs["mean_sq_norm"]),
            "norm_quantiles": dict(zip(levels.tolist(), quantiles.tolist(), strict=True)),
        }

    def norms(self, hook: str) -> np.ndarray:
        """‖x_i‖₂ of every stored row (decoded to float32) [n_tokens] float32.

        Computed chunk by chunk from acts/<hook> (checksum-verified reads); a format-1 file's stored
        `norms/<hook>` (the same values) is read instead.
        """
        if f"norms/{self._check_hook(hook)}" in self.file:
            return self.file[f"norms/{hook}"][()]
        return np.concatenate(
            [np.linalg.norm(self.read_chunk(hook, c), axis=1) for c in range(self.n_chunks)]
        )

    # ------------------------------------------------------------------ chunk access

    def _check_hook(self, hook: str) -> str:
        if hook not in self.hooks:
            raise KeyError(f"Hook {hook!r} is not in {self.path}; it holds {self.hooks}.")
        return hook

    def _acts(self, hook: str) -> h5py.Dataset:
        return self.file[f"acts/{self._check_hook(hook)}"]

    def read_chunk(self, hook: str, chunk: int) -> np.ndarray:
        """Rows of chunk `chunk` [≤ chunk_rows, d] float32 (checksum-verified on first read)."""
        return decode(self._read_stored(hook, chunk), self.storage_dtype)

    def _read_stored(self, hook: str, chunk: int, out: np.ndarray | None = None) -> np.ndarray:
        """Chunk `chunk` in the storage dtype, read into `out` (C-contiguous, [chunk length, d]) or
        a new array; its checksum is checked on the first read."""
        r0 = chunk * self.chunk_rows
        acts = self._acts(hook)
        if out is None:
            out = np.empty((self._chunk_len(chunk), acts.shape[1]), acts.dtype)
        try:
            acts.read_direct(out, np.s_[r0 : r0 + len(out)])
        except OSError as error:
            raise CorruptCacheError(
                f"{self.path}: chunk {chunk} of acts/{hook} cannot be read ({error}); the file is "
                "damaged. Delete it and rebuild it with `saesteer cache`."
            ) from None
        if self.verify_reads and (hook, chunk) not in self._verified:
            self._verify_chunk(hook, chunk, out)
        return out

    def _verify_chunk(self, hook: str, chunk: int, stored: np.ndarray) -> None:
        if sha256_array(stored).encode() != self._checksums[hook][chunk]:
            r0 = chunk * self.chunk_rows
            raise CorruptCacheError(
                f"{self.path}: chunk {chunk} of acts/{hook} (rows {r0}..{r0 + len(stored) - 1}) does not "
                "match its checksum: the file is damaged. Delete it and rebuild it with `saesteer cache`."
            )
        self._verified.add((hook, chunk))

    def verify(self) -> None:
        """Check every chunk of every hook, the tokens, meta/position and metadata checksums, and
        each hook's stats (recomputed from its acts); raise `CorruptCacheError` on a mismatch."""
        for hook in self.hooks:
            norms = np.empty(self.n_tokens, dtype=np.float32)
            total = np.zeros(self.d_model(hook), dtype=np.float64)
            for chunk in range(self.n_chunks):
                r0 = chunk * self.chunk_rows
                stored = self._acts(hook)[r0 : min(r0 + self.chunk_rows, self.n_tokens)]
                self._verify_chunk(hook, chunk, stored)
                values = decode(stored, self.storage_dtype)
                norms[r0 : r0 + len(values)] = np.linalg.norm(values, axis=1)
                total += values.sum(axis=0, dtype=np.float64)
            self._verify_stats(hook, total / self.n_tokens, norms)
        self._verify_per_token("tokens", self._read_per_token("tokens"))
        for name in ("position", *self.attrs["metadata_sha256"]):
            self._verify_per_token(f"meta/{name}", self.metadata(name))

    def _verify_stats(self, hook: str, mean: np.ndarray, norms: np.ndarray) -> None:
        """Stored stats/<hook> against those of the acts (mean, norms [n_tokens]); float sums in
        another order differ in the last bits, so values agree to a relative 1e-5."""
        stored = self.stats(hook)
        scale = float(norms.astype(np.float64).mean())
        levels = np.array(list(stored["norm_quantiles"]))
        expected = {
            "mean": (stored["mean"].numpy(), mean.astype(np.float32)),
            "mean_norm": (stored["mean_norm"], scale),
            "mean_sq_norm": (
                stored["mean_sq_norm"],
                float(np.square(norms.astype(np.float64)).mean()),
            ),
            "norm_quantiles": (
                np.array(list(stored["norm_quantiles"].values())),
                np.quantile(norms, levels) if levels.size else levels,
            ),
        }
        for name, (have, want) in expected.items():
            if not np.allclose(have, want, rtol=1e-5, atol=1e-6 * max(scale, 1.0)):
                raise CorruptCacheError(
                    f"{self.path}: stats/{hook} {name} does not match the stored activations; "
                    "the file is damaged. Delete it and rebuild it with `saesteer cache`."
                )

    # ------------------------------------------------------------------ iteration

    def read(self, hook: str, token_indices: Any) -> torch.Tensor:
        """Rows at `token_indices` (any order, repeats allowed) → [n, d] float32, via whole chunks."""
        index = np.asarray(token_indices, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.n_tokens):
            raise IndexError(
                f"token indices must be in [0, {self.n_tokens}); got {index.min()}..{index.max()}."
            )
        out = np.empty((index.size, self.d_model(hook)), dtype=np.float32)
        chunks = index // self.chunk_rows
        for chunk in np.unique(chunks):
            where = np.nonzero(chunks == chunk)[0]
            out[where] = self.read_chunk(hook, int(chunk))[index[where] - chunk * self.chunk_rows]
        return torch.from_numpy(out)

    def sequential_batches(self, hook: str, batch_size: int) -> Iterator[torch.Tensor]:
        """Batches [≤ batch_size, d] float32 in token order (the last may be shorter)."""
        return _batches((self.read_chunk(hook, c) for c in range(self.n_chunks)), batch_size)

    def shuffled_batches(
        self,
        hook: str,
        batch_size: int,
        seed: int,
        epoch: int = 0,
        start_batch: int = 0,
        *,
        window_chunks: int = 16,
        rank: int = 0,
        world_size: int = 1,
        rows: np.ndarray | None = None,
    ) -> Iterator[torch.Tensor]:
        """Deterministic shuffled batches (see module docstring); resume mid-epoch with `start_batch`.

        rows: a boolean mask [n_tokens] of the rows to read (e.g. `metadata("position") > 0` leaves
        out the first token of every context); the order definition then applies to the kept rows
        of each window, and every kept row appears once per epoch.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}.")
        _check_batch_size(batch_size)
        acts = self._acts(hook)
        if rows is not None and (rows.dtype != np.bool_ or rows.shape != (self.n_tokens,)):
            raise ValueError(
                f"rows must be a boolean mask of shape ({self.n_tokens},); "
                f"got {rows.dtype} {rows.shape}."
            )
        order = np.random.default_rng([seed, epoch]).permutation(self.n_chunks)
        windows = [order[i : i + window_chunks] for i in range(0, self.n_chunks, window_chunks)]
        ends = np.cumsum([sum(self._kept(c, rows) for c in window) for window in windows])
        total = int(ends[-1])

        def batches() -> Iterator[torch.Tensor]:
            d = acts.shape[1]
            buffer = np.empty((min(window_chunks * self.chunk_rows, self.n_tokens), d), acts.dtype)
            w, perm = -1, np.empty(0, dtype=np.int64)  # the window in `buffer`, and its row order
            for b0 in range(start_batch * batch_size, total, batch_size):
                m = min(batch_size, total - b0)
                lo, hi = b0 + rank * m // world_size, b0 + (rank + 1) * m // world_size
                out = np.empty((hi - lo, d), acts.dtype)
                row = lo  # this rank's part of the batch is stream rows [lo, hi)
                while row < hi:
                    if (holder := int(np.searchsorted(ends, row, side="right"))) != w:
                        w = holder
                        perm = self._read_window(hook, windows[w], buffer, (seed, epoch, w), rows)
                    start, end = int(ends[w]) - len(perm), min(hi, int(ends[w]))
                    np.take(
                        buffer,
                        perm[row - start : end - start],
                        axis=0,
                        out=out[row - lo : end - lo],
                        mode="clip",  # indices are valid; "raise" would gather into a temporary
                    )
                    row = end
                yield torch.from_numpy(decode(out, self.storage_dtype))

        return batches()

    def _read_window(
        self,
        hook: str,
        chunks: np.ndarray,
        buffer: np.ndarray,
        key: tuple[int, int, int],
        rows: np.ndarray | None,
    ) -> np.ndarray:
        """Read a window's chunks into buffer[:n] in order; return the buffer rows in stream order:
        perm_key(n), or with a `rows` mask its kept rows k permuted by perm_key(len(k))."""
        n, kept = 0, []
        for chunk in map(int, chunks):
            size = self._chunk_len(chunk)
            self._read_stored(hook, chunk, buffer[n : n + size])
            if rows is not None:
                r0 = chunk * self.chunk_rows
                kept.append(n + np.flatnonzero(rows[r0 : r0 + size]))
            n += size
        if rows is None:
            return np.random.default_rng(list(key)).permutation(n)
        kept_rows = np.concatenate(kept)
        return kept_rows[np.random.default_rng(list(key)).permutation(len(kept_rows))]

    def _chunk_len(self, chunk: int) -> int:
        return min(self.chunk_rows, self.n_tokens - chunk * self.chunk_rows)

    def _kept(self, chunk: int, rows: np.ndarray | None) -> int:
        """Rows of `chunk` that a `rows` mask keeps (all without a mask)."""
        if rows is None:
            return self._chunk_len(chunk)
        r0 = chunk * self.chunk_rows
        return int(rows[r0 : r0 + self.chunk_rows].sum())

    def dataloader(
        self, hook: str, batch_size: int, seed: int = 0, *, prefetch: int = 2, **options: Any
    ):
        """Iterable of batches produced by a background thread (`prefetch` batches ahead);
        `options` are `ActivationDataset`'s (shuffle, epoch, start_batch, window_chunks, rank,
        world_size, skip_positions)."""
        from activations_cache.loader import ActivationDataset, PrefetchLoader

        dataset = ActivationDataset(self.path, hook, batch_size, seed, **options)
        return PrefetchLoader(dataset, prefetch)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"CacheReader({str(self.path)!r}, n_tokens={self.n_tokens}, hooks={self.hooks}, "
            f"dtype={self.storage_dtype})"
        )


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}.")


def _batches(blocks: Iterator[np.ndarray], batch_size: int) -> Iterator[torch.Tensor]:
    """Cut a stream of row blocks into batches of `batch_size` rows (the last may be shorter)."""
    _check_batch_size(batch_size)
    pending: list[np.ndarray] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += len(block)
        if held < batch_size:
            continue
        rows = pending[0] if len(pending) == 1 else np.concatenate(pending)  # no copy if whole
        cut = (len(rows) // batch_size) * batch_size
        for b0 in range(0, cut, batch_size):
            yield torch.from_numpy(rows[b0 : b0 + batch_size])
        pending = [rows[cut:]] if cut < len(rows) else []
        held = len(rows) - cut
    if held:
        yield torch.from_numpy(np.concatenate(pending))
