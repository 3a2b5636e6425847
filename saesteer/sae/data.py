"""Where training activations come from: an in-memory tensor, the activation cache, or a model run
on the fly over a corpus. Every source yields *global* batches by index, so a run can resume at
any batch and data-parallel ranks read disjoint slices of the same global batch.

Contract of a source:
    d_in                         activation width
    batches(batch_size, seed, start, rank, world_size)
                                 → iterator over local batches [batch_size // world_size, d_in]
                                   float32; the global batch i (counting from 0 over all epochs) is
                                   the concatenation of the ranks' slices in rank order; `start` skips
                                   the first `start` global batches (resume)
    describe()                   → JSON-able dict (kind, size, checksums) for the run's metadata

`ChunkedSource` implements this for anything that can produce deterministic chunks of rows:
global batch i lives in chunk c, whose rows are shuffled with a generator seeded by (seed, c).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from saesteer.sae.configs import TrainSAEConfig


class ActivationSource(Protocol):
    d_in: int

    def batches(
        self, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[torch.Tensor]: ...

    def describe(self) -> dict[str, Any]: ...


def local_slice(batch_size: int, rank: int, world_size: int) -> slice:
    """Rows of a global batch that belong to `rank`."""
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must be divisible by the {world_size} ranks.")
    size = batch_size // world_size
    return slice(rank * size, (rank + 1) * size)


def check_finite(acts: torch.Tensor, where: str) -> None:
    """Raise a clear error if activations hold NaN/Inf (before they reach the SAE)."""
    if not torch.isfinite(acts).all():
        bad = int((~torch.isfinite(acts)).any(dim=-1).sum())
        raise ValueError(
            f"{bad} activation row(s) contain NaN/Inf in {where}. Rebuild the cache (or check the "
            "model's dtype: use float32 if it overflows) before training."
        )


class ChunkedSource:
    """Base for sources made of `n_chunks` deterministic chunks of rows (see module docstring)."""

    d_in: int
    n_chunks: int

    def chunk(self, index: int) -> torch.Tensor:
        """Rows of chunk `index` [n, d_in], in a fixed order."""
        raise NotImplementedError

    def chunk_rows(self, index: int) -> int:
        raise NotImplementedError

    def batches(
        self, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[torch.Tensor]:
        rows = local_slice(batch_size, rank, world_size)
        per_chunk = [self.chunk_rows(c) // batch_size for c in range(self.n_chunks)]
        if sum(per_chunk) == 0:
            raise ValueError(
                f"Not one batch of {batch_size} rows fits in the data ({self.describe()}); "
                "lower --batch-size or provide more tokens."
            )
        index = start
        while True:
            c, offset = self._locate(index, per_chunk)
            epoch = index // sum(per_chunk)
            data = self.chunk(c)
            gen = torch.Generator().manual_seed(hash_seed(seed, epoch, c))
            order = torch.randperm(data.shape[0], generator=gen)
            for b in range(offset, per_chunk[c]):
                take = order[b * batch_size : (b + 1) * batch_size][rows]
                yield data[take].float()
                index += 1

    def _locate(self, index: int, per_chunk: list[int]) -> tuple[int, int]:
        within = index % sum(per_chunk)
        for c, n in enumerate(per_chunk):
            if within < n:
                return c, within
            within -= n
        raise AssertionError("unreachable")


def hash_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across processes and Python versions)."""
    digest = hashlib.sha256(",".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class TensorSource(ChunkedSource):
    """Activations held in memory: acts [n_tokens, d_in], one chunk, reshuffled every epoch."""

    def __init__(self, acts: torch.Tensor, name: str = "tensor", skip_positions: int = 0) -> None:
        if skip_positions:
            raise ValueError(
                "In-memory activations [n_tokens, d_in] carry no positions, so --skip-positions "
                "cannot apply; drop those rows before saving, or train from a cache or a model."
            )
        if acts.ndim != 2:
            raise ValueError(
                f"Activations must be [n_tokens, d_in]; got shape {tuple(acts.shape)}."
            )
        self.acts = acts.detach().cpu().float().contiguous()
        check_finite(self.acts, name)
        self.d_in, self.n_chunks, self.name = self.acts.shape[1], 1, name

    def chunk(self, index: int) -> torch.Tensor:
        return self.acts

    def chunk_rows(self, index: int) -> int:
        return self.acts.shape[0]

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.acts.numpy().tobytes()).hexdigest()
        return {
            "kind": "tensor",
            "name": self.name,
            "n_tokens": self.acts.shape[0],
            "sha256": digest,
        }


class ModelSource(ChunkedSource):
    """Activations computed on the fly: run `model` up to `hook` over token contexts [n_ctx, L].

    Chunk c holds contexts [c·C, (c+1)·C) with C = `contexts_per_chunk`; rows are every position
    from `skip_positions` on (1 leaves out the attention sink at position 0).
    """

    def __init__(
        self,
        model: Any,
        hook: str,
        tokens: np.ndarray,
        contexts_per_chunk: int = 64,
        model_batch: int = 8,
        skip_positions: int = 0,
    ) -> None:
        if hook not in model.hook_dict:
            raise ValueError(f"Hook {hook!r} is not in the model; e.g. blocks.0.hook_resid_post.")
        self.model, self.hook, self.model_batch = model, hook, model_batch
        self.tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
        if not 0 <= skip_positions < self.tokens.shape[1]:
            raise ValueError(
                f"skip_positions must be in [0, context_len={self.tokens.shape[1]}); got {skip_positions}."
            )
        self.skip_positions = skip_positions
        self.C = contexts_per_chunk
        self.n_chunks = max(1, math.ceil(self.tokens.shape[0] / self.C))  # last may be short
        self.layer = int(hook.split(".")[1]) + 1 if hook.startswith("blocks.") else None
        self.d_in = self._run(self.tokens[:1, : skip_positions + 1]).shape[-1]
        self._cached: tuple[int, torch.Tensor] | None = None

    @torch.no_grad()
    def _run(self, tokens: torch.Tensor) -> torch.Tensor:
        store: list[torch.Tensor] = []

        def grab(act: torch.Tensor, hook: Any) -> None:
            kept = act.detach()[:, self.skip_positions :]
            store.append(kept.float().reshape(-1, act.shape[-1]).cpu())

        self.model.run_with_hooks(tokens, fwd_hooks=[(self.hook, grab)], stop_at_layer=self.layer)
        return torch.cat(store)

    def chunk(self, index: int) -> torch.Tensor:
        if self._cached is None or self._cached[0] != index:
            ctx = self.tokens[index * self.C : (index + 1) * self.C]
            acts = torch.cat(
                [
                    self._run(ctx[i : i + self.model_batch])
                    for i in range(0, ctx.shape[0], self.model_batch)
                ]
            )
            check_finite(acts, f"{self.hook} of the model (chunk {index})")
            self._cached = (index, acts)
        return self._cached[1]

    def chunk_rows(self, index: int) -> int:
        contexts = min(self.C, self.tokens.shape[0] - index * self.C)
        return contexts * (self.tokens.shape[1] - self.skip_positions)

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.tokens.numpy().tobytes()).hexdigest()
        return {
            "kind": "model",
            "hook": self.hook,
            "n_contexts": int(self.tokens.shape[0]),
            "context_len": int(self.tokens.shape[1]),
            "skip_positions": self.skip_positions,
            "tokens_sha256": digest,
        }


def build_source(cfg: TrainSAEConfig) -> ActivationSource:
    """The activation source named by `cfg` (exactly one of cache, activations, model)."""
    given = [name for name in ("cache", "activations", "model") if getattr(cfg, name)]
    if len(given) != 1:
        raise ValueError(
            "Give exactly one data source: --cache DIR, --activations FILE or --model NAME "
            f"(got {given or 'none'})."
        )
    if cfg.activations:
        from safetensors.torch import load_file

        path = Path(cfg.activations)
        if not path.is_file():
            raise FileNotFoundError(f"Activations file {path} does not exist.")
        return TensorSource(load_file(path)["acts"], path.name, cfg.skip_positions)
    if cfg.cache:
        from saesteer.sae.cache_source import CacheSource

        return CacheSource(cfg.cache, cfg.hook, cfg.skip_positions)
    from saesteer.corpus import make_contexts
    from saesteer.models import load_model

    if not cfg.hook:
        raise ValueError("On-the-fly training needs --hook, e.g. blocks.0.hook_resid_post.")
    model, tokenizer = load_model(cfg.model)
    n_tokens = cfg.tokens + cfg.init_tokens
    contexts = make_contexts(
        tokenizer, source=cfg.corpus, context_len=cfg.context_len, n_tokens=n_tokens, seed=cfg.seed
    )
    return ModelSource(model, cfg.hook, contexts.tokens, skip_positions=cfg.skip_positions)
