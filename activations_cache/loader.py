"""A torch `IterableDataset` over a cache, and a background-thread prefetcher so reading overlaps compute.

`ActivationDataset` holds only the path and options (picklable: each DataLoader worker opens the
file itself) and yields the same batches as `CacheReader.shuffled_batches` / `sequential_batches`;
use it with `torch.utils.data.DataLoader(dataset, batch_size=None)`. With several DataLoader
workers, worker k yields batches k, k+K, … — DataLoader's round-robin then restores the exact order.

`PrefetchLoader` runs the dataset's iterator in a thread with a queue of `prefetch` batches: HDF5
reads, checksum checks and the in-memory shuffle run while the caller trains on the previous batch.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

_DONE = object()


class ActivationDataset(IterableDataset):
    """Batches [B, d] float32 of one hook of the cache at `path` (each item is a whole batch)."""

    def __init__(
        self,
        path: str | Path,
        hook: str,
        batch_size: int,
        seed: int = 0,
        *,
        shuffle: bool = True,
        epoch: int = 0,
        start_batch: int = 0,
        window_chunks: int = 16,
        rank: int = 0,
        world_size: int = 1,
        skip_positions: int = 0,
    ):
        """skip_positions: leave out the first tokens of every context (shuffled reading only)."""
        super().__init__()
        if skip_positions and not shuffle:
            raise ValueError("skip_positions applies to shuffled reading; use shuffle=True.")
        self.path, self.hook, self.batch_size, self.seed = Path(path), hook, batch_size, seed
        self.shuffle, self.epoch, self.start_batch = shuffle, epoch, start_batch
        self.window_chunks, self.rank, self.world_size = window_chunks, rank, world_size
        self.skip_positions = skip_positions

    def __iter__(self) -> Iterator[torch.Tensor]:
        from activations_cache.reader import open_cache

        reader = open_cache(self.path)
        try:
            if self.shuffle:
                batches = reader.shuffled_batches(
                    self.hook,
                    self.batch_size,
                    self.seed,
                    self.epoch,
                    self.start_batch,
                    window_chunks=self.window_chunks,
                    rank=self.rank,
                    world_size=self.world_size,
                    rows=reader.rows_from_position(self.skip_positions),
                )
            else:
                batches = itertools.islice(
                    reader.sequential_batches(self.hook, self.batch_size), self.start_batch, None
                )
            worker = get_worker_info()
            if worker is not None and worker.num_workers > 1:
                batches = itertools.islice(batches, worker.id, None, worker.num_workers)
            yield from batches
        finally:
            reader.close()

    def __len__(self) -> int:
        from activations_cache.reader import open_cache

        with open_cache(self.path) as reader:
            rows = reader.rows_from_position(self.skip_positions)
            n = reader.n_tokens if rows is None else int(rows.sum())
            return max(0, math.ceil(n / self.batch_size) - self.start_batch)


class PrefetchLoader:
    """Iterate `dataset` in a background thread, keeping up to `prefetch` batches ready."""

    def __init__(self, dataset: ActivationDataset, prefetch: int = 2):
        if prefetch < 1:
            raise ValueError(f"prefetch must be ≥ 1, got {prefetch}.")
        self.dataset, self.prefetch = dataset, prefetch

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[torch.Tensor]:
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in self.dataset:
                    while not stop.is_set():
                        try:
                            ready.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                ready.put(_DONE)
            except BaseException as error:  # handed to the consumer, which raises it
                ready.put(error)

        thread = threading.Thread(target=produce, daemon=True, name="activations-cache-prefetch")
        thread.start()
        try:
            while (item := ready.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=5)
