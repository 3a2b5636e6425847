"""Activations for feature discovery, read in whole contexts and token order.

Token i of a table is position i % L of context i // L (L = `context_length`), the layout of the
activation cache. Batches always hold whole contexts, so a window of tokens around any token of a
batch lies inside that batch.

    ArrayActivations(acts [n_tokens, d], tokens [n_ctx, L])      in memory (tests, notebooks)
    CachedActivations(path_or_reader, hook)                        the HDF5 activation cache

`check_cache_model(reader, model)` refuses a cache whose recorded weights sha256 the model does not
give (a same-named model with other weights, e.g. `tiny-test` of another seed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch


class ActivationTable(Protocol):
    """Token-ordered activations at one hook: see the module docstring."""

    hook: str
    n_tokens: int
    context_length: int
    d_model: int

    @property
    def tokens(self) -> np.ndarray:
        """Token ids [n_tokens] int."""
        ...

    def batches(self, contexts_per_batch: int) -> Iterator[torch.Tensor]:
        """Consecutive [contexts_per_batch · L, d_model] float32 batches (the last may be shorter)."""
        ...

    def describe(self) -> dict[str, Any]: ...


def whole_contexts(n_tokens: int, context_length: int, max_tokens: int) -> int:
    """Tokens to read: all, or the first `max_tokens` rounded down to whole contexts (≥ 1)."""
    if max_tokens <= 0:
        return n_tokens
    if max_tokens < context_length:
        raise ValueError(
            f"--max-tokens {max_tokens} is less than one context ({context_length} tokens)."
        )
    return min(n_tokens, max_tokens // context_length * context_length)


class ArrayActivations:
    """Activations held in memory: acts [n_tokens, d] with tokens [n_ctx, L], n_tokens = n_ctx·L."""

    def __init__(
        self,
        acts: torch.Tensor | np.ndarray,
        tokens: np.ndarray,
        hook: str = "",
        max_tokens: int = 0,
    ) -> None:
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(
                f"tokens must be [n_contexts, context_length]; got shape {tokens.shape}."
            )
        acts = torch.as_tensor(acts)
        if acts.ndim != 2 or acts.shape[0] != tokens.size:
            raise ValueError(
                f"acts must be [n_tokens={tokens.size}, d]; got {tuple(acts.shape)} "
                "(flatten [n_ctx, L, d] activations with .reshape(-1, d))."
            )
        self.context_length = tokens.shape[1]
        self.n_tokens = whole_contexts(tokens.size, self.context_length, max_tokens)
        self.hook = hook
        self.d_model = acts.shape[1]
        self._acts = acts[: self.n_tokens]
        self._tokens = tokens.reshape(-1)[: self.n_tokens]

    @property
    def tokens(self) -> np.ndarray:
        return self._tokens

    def batches(self, contexts_per_batch: int) -> Iterator[torch.Tensor]:
        rows = contexts_per_batch * self.context_length
        for start in range(0, self.n_tokens, rows):
            yield self._acts[start : start + rows].float()

    def describe(self) -> dict[str, Any]:
        return {"kind": "array", "hook": self.hook, "n_tokens": self.n_tokens}


class CachedActivations:
    """One hook of an activation cache (`activations_cache.open_cache`), in token order."""

    def __init__(self, cache: Any, hook: str, max_tokens: int = 0) -> None:
        from activations_cache import open_cache

        self.reader = open_cache(cache) if isinstance(cache, str | Path) else cache
        if hook not in self.reader.hooks:
            raise ValueError(
                f"The cache {self.reader.path} has no hook {hook!r} (it has {self.reader.hooks}). "
                "Pass --hook, or build a cache of the SAE's hook with `saesteer cache`."
            )
        self.hook = hook
        self.context_length = int(self.reader.attrs["context_len"])
        self.n_tokens = whole_contexts(self.reader.n_tokens, self.context_length, max_tokens)
        self.d_model = self.reader.d_model(hook)

    @property
    def tokens(self) -> np.ndarray:
        return self.reader.tokens[: self.n_tokens]

    def batches(self, contexts_per_batch: int) -> Iterator[torch.Tensor]:
        rows = contexts_per_batch * self.context_length
        done = 0
        for batch in self.reader.sequential_batches(self.hook, rows):
            batch = batch[: self.n_tokens - done]
            done += len(batch)
            yield batch
            if done >= self.n_tokens:
                return

    def describe(self) -> dict[str, Any]:
        attrs = self.reader.attrs
        return {
            "kind": "activations_cache",
            "path": str(self.reader.path),
            "hook": self.hook,
            "n_tokens": self.n_tokens,
            "tokens_sha256": attrs.get("tokens_sha256"),
        }


def check_cache_model(reader: Any, model: Any, model_name: str = "") -> bool:
    """ValueError when `model` (a HookedTransformer) is not the model the cache was made with;
    returns whether the check could be made (False: nothing to compare, see below).

    The cache records `model_weights_sha256` of the weights its forward ran
    (`activations_cache.fingerprint`). It is recomputed here (~0.3 s per 300 MB) for caches written
    by the TransformerLens backend from a model in the same dtype. Caches of the Hugging Face
    backend (the default for residual hooks of the default model) hash the HF module's weights,
    under other names and layouts: recomputing that needs the HF model, so it is not checked.
    """
    from activations_cache import TransformerLensSource

    attrs = reader.attrs
    recorded = attrs.get("model_weights_sha256")
    if not recorded or attrs.get("backend") != TransformerLensSource.backend:
        return False
    if not hasattr(model, "hook_dict"):
        return False
    from saesteer.models import resolve_dtype

    job = attrs.get("job_config") if isinstance(attrs.get("job_config"), dict) else {}
    dtype = next(model.parameters()).dtype
    try:
        if resolve_dtype(job.get("model_dtype", dtype)) != dtype:
            return False  # the hash covers the dtype: another dtype always differs
    except ValueError:
        return False
    try:
        actual = TransformerLensSource(model, list(reader.hooks)).weights_sha256()
    except ValueError as error:
        raise ValueError(
            f"The cache {reader.path} holds hooks {reader.hooks} that the loaded model "
            f"{model_name!r} does not have ({error}); pass the model the cache was made with."
        ) from None
    if actual != recorded:
        seed = f" (the cache was made with --seed {job['seed']})" if "seed" in job else ""
        raise ValueError(
            f"The cache {reader.path} was made by a model with other weights than the loaded "
            f"{model_name or 'model'!r}{seed}: it records weights sha256 {str(recorded)[:16]}…, "
            f"the loaded model gives {actual[:16]}…. Rebuild the cache with this model "
            "(`saesteer cache --model ...`), or load the model the cache was made with."
        )
    return True
