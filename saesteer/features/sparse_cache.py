"""The sparse latent cache: each cached token's k strongest SAE latents, to ask "where does latent
i fire" without re-encoding.

File layout (HDF5, `latents.h5`; written to `latents.h5.partial` and renamed when complete):

    indices   [n_tokens, k] int32     latent ids, strongest first; −1 where fewer than k fire
    values    [n_tokens, k] float32   z[t, indices[t, j]] (0 where the index is −1)
    tokens    [n_tokens]    int32     token ids (token t is position t % L of context t // L)
    attrs     d_sae, k, context_length, hook, sae_checksum, complete=True

With z = encode(x) [n_tokens, d_sae], row t holds (topk(z[t], k) restricted to z > 0). It is exact
(every firing recorded) wherever a token has ≤ k firing latents — always for TopK SAEs with k ≤ the
cache's k — and otherwise keeps each token's k largest activations.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

CHUNK_ROWS = 4096
SCAN_ROWS = 1 << 16


def token_topk(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, values) [B, k] of each row's k largest positive activations; −1 / 0 pad."""
    values, indices = z.topk(min(k, z.shape[1]), dim=1)
    fired = values > 0
    indices = torch.where(fired, indices, -1).to(torch.int32)
    values = torch.where(fired, values, 0.0).float()
    if values.shape[1] < k:
        pad = k - values.shape[1]
        indices = torch.nn.functional.pad(indices, (0, pad), value=-1)
        values = torch.nn.functional.pad(values, (0, pad), value=0.0)
    return indices, values


class SparseLatentWriter:
    """Writes a sparse latent cache batch by batch, in token order; `close()` makes it complete."""

    def __init__(self, path: str | Path, n_tokens: int, k: int, attrs: dict[str, Any]) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.partial, "w")
        chunks = (min(CHUNK_ROWS, max(n_tokens, 1)), k)
        self.indices = self.file.create_dataset("indices", (n_tokens, k), "int32", chunks=chunks)
        self.values = self.file.create_dataset("values", (n_tokens, k), "float32", chunks=chunks)
        self.file.create_dataset("tokens", (n_tokens,), "int32")
        self.file.attrs.update({**attrs, "k": k, "complete": False})
        self.n_tokens = n_tokens
        self.written = 0

    def write(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Append rows: indices, values [B, k] from `token_topk`."""
        end = self.written + len(indices)
        self.indices[self.written : end] = indices.cpu().numpy()
        self.values[self.written : end] = values.cpu().numpy()
        self.written = end

    def close(self, tokens: np.ndarray) -> Path:
        """Store token ids [n_tokens], mark complete, and move the file into place."""
        if self.written != self.n_tokens:
            raise RuntimeError(f"Sparse latent cache got {self.written} of {self.n_tokens} rows.")
        self.file["tokens"][:] = np.asarray(tokens, dtype=np.int32)
        self.file.attrs["complete"] = True
        self.file.close()
        os.replace(self.partial, self.path)
        return self.path


class SparseLatentCache:
    """Read a sparse latent cache: `where_fires(latent)`, `rows(token_indices)`, `tokens`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"No sparse latent cache at {self.path}; run `saesteer features` to build it."
            )
        self.file = h5py.File(self.path, "r")
        if not self.file.attrs.get("complete", False):
            raise ValueError(f"{self.path} is incomplete; delete it and rerun `saesteer features`.")
        self.attrs = dict(self.file.attrs)
        self.k = int(self.attrs["k"])
        self.d_sae = int(self.attrs["d_sae"])
        self.context_length = int(self.attrs["context_length"])
        self.n_tokens = int(self.file["indices"].shape[0])

    @property
    def tokens(self) -> np.ndarray:
        """Token ids [n_tokens] int32."""
        return self.file["tokens"][()]

    def _scan(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for start in range(0, self.n_tokens, SCAN_ROWS):
            stop = start + SCAN_ROWS
            yield start, self.file["indices"][start:stop], self.file["values"][start:stop]

    def where_fires(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """(token indices [m] int64 ascending, activations [m] float32) of every recorded firing."""
        if not 0 <= latent < self.d_sae:
            raise IndexError(f"latent must be in [0, {self.d_sae}); got {latent}.")
        found_tokens, found_values = [], []
        for start, indices, values in self._scan():
            rows, cols = np.nonzero(indices == latent)
            found_tokens.append(rows.astype(np.int64) + start)
            found_values.append(values[rows, cols])
        return np.concatenate(found_tokens), np.concatenate(found_values)

    def rows(self, token_indices: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(indices, values) [n, k] for the given tokens (any order, repeats allowed)."""
        wanted = np.asarray(token_indices, dtype=np.int64).reshape(-1)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= self.n_tokens):
            raise IndexError(f"token indices must be in [0, {self.n_tokens}).")
        unique, inverse = np.unique(wanted, return_inverse=True)
        return self.file["indices"][unique][inverse], self.file["values"][unique][inverse]

    def dense(self, token_indices: np.ndarray | list[int]) -> torch.Tensor:
        """z [n, d_sae] rebuilt from the recorded latents (zeros elsewhere)."""
        indices, values = self.rows(token_indices)
        z = torch.zeros(len(indices), self.d_sae + 1)
        z.scatter_(
            1,
            torch.from_numpy(np.where(indices < 0, self.d_sae, indices)).long(),
            torch.from_numpy(values),
        )
        return z[:, : self.d_sae]

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> SparseLatentCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
