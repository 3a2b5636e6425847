"""activations_cache: model + token contexts → a verified, resumable HDF5 activation cache, and its readers.

    from activations_cache import write_cache, open_cache
    write_cache("acts.h5", model, tokens, ["blocks.15.hook_resid_post"], dtype="float16")
    reader = open_cache("acts.h5")
    for batch in reader.shuffled_batches("blocks.15.hook_resid_post", 4096, seed=0):  # [B, d] float32
        ...

This package knows only torch, h5py and numpy: it takes a model object (TransformerLens
HookedTransformer or Hugging Face decoder), token arrays and metadata dicts. The file format is
described in `activations_cache.format` and docs/cache_format.md.
"""

from activations_cache.format import (
    CacheError,
    CacheExistsError,
    CacheWriteError,
    CorruptCacheError,
    IncompleteCacheError,
    ResumeMismatchError,
)
from activations_cache.loader import ActivationDataset, PrefetchLoader
from activations_cache.reader import CacheReader, open_cache
from activations_cache.sources import (
    HFResidualSource,
    TransformerLensSource,
    UnknownHookError,
    make_source,
)
from activations_cache.writer import write_cache

__all__ = [
    "ActivationDataset",
    "CacheError",
    "CacheExistsError",
    "CacheReader",
    "CacheWriteError",
    "CorruptCacheError",
    "HFResidualSource",
    "IncompleteCacheError",
    "PrefetchLoader",
    "ResumeMismatchError",
    "TransformerLensSource",
    "UnknownHookError",
    "make_source",
    "open_cache",
    "write_cache",
]
