"""Training batches from an `activations_cache` file (the shuffled, verified, resumable reader).

Global batch i (over all epochs, full batches only) is batch i mod E of epoch i // E, E = ⌊n/B⌋
(n: the cache's tokens, less the first `skip_positions` of each context),
in the reader's deterministic shuffled order for (seed, epoch); rank r gets the reader's r-th slice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


class CacheSource:
    """`data.ActivationSource` over one hook of a finished cache (`saesteer cache` output)."""

    def __init__(self, path: str | Path, hook: str = "", skip_positions: int = 0) -> None:
        """skip_positions: leave out the first `skip_positions` tokens of every context (by the
        cache's `meta/position`), e.g. 1 for the attention sink."""
        from activations_cache import open_cache

        self.reader = open_cache(path)
        if not hook:
            if len(self.reader.hooks) != 1:
                raise ValueError(f"{path} holds hooks {self.reader.hooks}; pick one with --hook.")
            hook = self.reader.hooks[0]
        if hook not in self.reader.hooks:
            raise ValueError(
                f"Hook {hook!r} is not in the cache {path}; it holds {self.reader.hooks}."
            )
        self.path, self.hook = Path(path), hook
        self.d_in = self.reader.d_model(hook)
        self.skip_positions = skip_positions
        self.rows = self.reader.rows_from_position(skip_positions)
        self.n_rows = self.reader.n_tokens if self.rows is None else int(self.rows.sum())
        self.model_name = str(self.reader.attrs.get("model_name") or "")

    def batches(
        self, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[torch.Tensor]:
        per_epoch = self.n_rows // batch_size
        if per_epoch == 0:
            raise ValueError(
                f"The cache holds {self.n_rows} usable tokens (skipping the first "
                f"{self.skip_positions} positions of each context), less than one batch of "
                f"{batch_size}; lower --batch-size or cache more tokens."
            )
        epoch, first = divmod(start, per_epoch)
        while True:
            stream = self.reader.shuffled_batches(
                self.hook,
                batch_size,
                seed,
                epoch,
                first,
                rank=rank,
                world_size=world_size,
                rows=self.rows,
            )
            for _ in range(first, per_epoch):
                yield next(stream)
            epoch, first = epoch + 1, 0

    def describe(self) -> dict[str, Any]:
        import hashlib

        checksums = self.reader.file[f"checksums/{self.hook}"][()]
        digest = hashlib.sha256(repr(checksums.tolist()).encode()).hexdigest()
        attrs = {k: v for k, v in self.reader.attrs.items() if isinstance(v, str | int | float)}
        return {
            "kind": "cache",
            "path": str(self.path),
            "hook": self.hook,
            "n_tokens": self.reader.n_tokens,
            "skip_positions": self.skip_positions,
            "chunk_checksums_sha256": digest,
            "attrs": attrs,
        }
