"""Checksum of the model weights that shape a cache (the resume guard and provenance of a cache).

    weights_sha256(module, prefixes) = sha256 over the state-dict entries whose name starts with one
    of `prefixes` (all entries when None), sorted by name, each as  name | dtype | shape | bytes.

A source passes the prefixes of what its forward runs (embeddings and the blocks up to the last
hook), so a cache of layer 15 of a 30-layer model hashes about half the weights, and two models that
differ only above the hooks give the same cache and the same checksum. An entry whose storage was
already hashed under another name (tied embeddings) is hashed by name only.

Hashing 300 MB of weights takes ~0.3 s, so the digest is memoised per process, keyed by every hashed
tensor's name, data pointer, shape, dtype and version counter, and kept only while the same
tensor objects are alive: an in-place update (an optimizer step,
`load_state_dict`) bumps the version and forces a fresh hash. Inference tensors have no version
counter, so they are hashed every time.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence

import torch

_MEMO: dict[tuple, tuple[tuple[weakref.ref, ...], str]] = {}
_MEMO_SIZE = 4  # digests kept: a few models (or layer ranges) per process


def _selected(
    module: torch.nn.Module, prefixes: Sequence[str] | None
) -> list[tuple[str, torch.Tensor]]:
    entries = module.state_dict(keep_vars=True).items()
    chosen = [
        (name, tensor)
        for name, tensor in entries
        if prefixes is None or name.startswith(tuple(prefixes))
    ]
    return sorted(chosen, key=lambda entry: entry[0])


def weights_sha256(module: torch.nn.Module, prefixes: Sequence[str] | None = None) -> str:
    """Hex sha256 of `module`'s state-dict entries under `prefixes` (see the module docstring)."""
    entries = _selected(module, prefixes)
    if not entries:
        raise ValueError(
            f"No weights of {type(module).__name__} match {list(prefixes or [])}; "
            "the source's prefixes do not fit this model."
        )
    if any(t.is_inference() for _, t in entries):  # no version counter: cannot memoise safely
        return _digest(entries)
    key = tuple((name, t.data_ptr(), t._version, tuple(t.shape), t.dtype) for name, t in entries)
    alive, digest = _MEMO.get(key, ((), ""))
    # the same tensor objects still alive (a freed model's addresses may be reused by another)
    if len(alive) != len(entries) or any(
        ref() is not t for ref, (_, t) in zip(alive, entries, strict=False)
    ):
        digest = _digest(entries)
        if len(_MEMO) >= _MEMO_SIZE:
            del _MEMO[next(iter(_MEMO))]  # the oldest
        _MEMO[key] = (tuple(weakref.ref(t) for _, t in entries), digest)
    return digest


def _digest(entries: list[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256()
    seen: set[tuple[int, int, tuple]] = set()
    for name, tensor in entries:
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        identity = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.stride()),
        )
        if tensor.numel() == 0 or identity in seen:
            continue
        seen.add(identity)
        tensor = tensor.detach().cpu().contiguous()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.view(torch.int16)
        digest.update(tensor.numpy().data)  # the buffer itself, no copy
    return digest.hexdigest()
