"""Documents → deterministic fixed-length token contexts.

Contexts (`make_contexts`), with L = context_len, rng = numpy.random.default_rng(seed):

    split_perm  = default_rng(split_seed).permutation(n_docs)      the split: independent of `seed`
    n_val       = max(1, round(validation_fraction · n_docs))     (0 when validation_fraction = 0)
    validation  = split_perm[:n_val],  train = split_perm[n_val:]  a document is in one split only
    order       = rng.permutation(split's documents)               seeded packing order
    stream      = doc_a ‖ eos ‖ doc_b ‖ eos ‖ …                    the split's documents in order
    windows     = bos ‖ stream[i·(L−1) : (i+1)·(L−1)]              (prepend_bos; else stream[i·L : (i+1)·L])
                  for i < ⌊len(stream) / (L−1)⌋                    the ragged tail is dropped
    contexts    = windows[rng.permutation(n_windows)][:⌈n_tokens / L⌉]

So a context never mixes the two splits, the same seed gives identical contexts, and a different
seed gives another order of the same documents: held-out documents stay held out whatever `seed` a
job uses (only `split_seed` moves them). bos is `tokenizer.bos_token_id`, falling back to eos.

Tokenized documents are cached under `cache_dir()/tokens/`, keyed by the sha256 of the tokenizer's
definition and of the documents' text, so a changed file or tokenizer never reuses stale tokens.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saesteer.corpus.document import CorpusError, Document
from saesteer.corpus.sources import load_documents
from saesteer.paths import atomic_write_bytes, cache_dir

TOKEN_CACHE_VERSION = 1
ENCODE_BATCH_DOCS = 1000


# --------------------------------------------------------------------------- tokenize (cached)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's full definition (fast tokenizers) or of its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = (
        backend.to_str()
        if backend is not None
        else json.dumps(sorted(tokenizer.get_vocab().items()))
    )
    return hashlib.sha256(spec.encode()).hexdigest()


def documents_checksum(docs: list[Document]) -> str:
    """sha256 over every (doc_id, text), in order."""
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(f"{len(doc.doc_id)}:{doc.doc_id}{len(doc.text)}:".encode())
        digest.update(doc.text.encode())
    return digest.hexdigest()


def tokenize_documents(tokenizer: Any, docs: list[Document]) -> tuple[np.ndarray, np.ndarray]:
    """(flat [n_doc_tokens] int32, offsets [n_docs + 1] int64): doc i is flat[offsets[i]:offsets[i+1]].

    No special tokens are added. Results are cached in `cache_dir()/tokens/` (atomic write);
    an unreadable cache file is recomputed.
    """
    key = f"v{TOKEN_CACHE_VERSION}-{tokenizer_fingerprint(tokenizer)[:16]}-{documents_checksum(docs)[:16]}"
    path = cache_dir() / "tokens" / f"{key}.npz"
    cached = _read_token_cache(path, len(docs))
    if cached is not None:
        return cached
    ids: list[list[int]] = []
    for start in range(0, len(docs), ENCODE_BATCH_DOCS):
        texts = [doc.text for doc in docs[start : start + ENCODE_BATCH_DOCS]]
        ids.extend(tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in ids], out=offsets[1:])
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))
    buffer = io.BytesIO()
    np.savez(buffer, flat=flat, offsets=offsets)
    atomic_write_bytes(path, buffer.getvalue())
    return flat, offsets


def _read_token_cache(path: Path, n_docs: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path) as saved:
            flat, offsets = saved["flat"], saved["offsets"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    if len(offsets) != n_docs + 1 or offsets[-1] != len(flat) or flat.dtype != np.int32:
        return None
    return flat, offsets


# --------------------------------------------------------------------------- contexts


@dataclass
class TokenContexts:
    """Fixed-length token contexts of one split of a source, ready for a model.

    tokens:       [n_contexts, context_len] int32
    doc_ids:      [n_contexts, context_len] int32, index into `doc_names` per token; -1 for BOS/EOS
    special_mask: [n_contexts, context_len] bool, True for BOS/EOS (separator) tokens
    """

    tokens: np.ndarray
    doc_ids: np.ndarray
    special_mask: np.ndarray
    source: str
    split: str
    seed: int
    split_seed: int
    prepend_bos: bool
    validation_fraction: float
    tokenizer_name: str
    tokenizer_sha256: str
    documents_sha256: str
    doc_names: list[str] = field(repr=False)

    @property
    def context_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def n_contexts(self) -> int:
        return int(self.tokens.shape[0])

    def __len__(self) -> int:
        return self.n_contexts

    def present_documents(self) -> list[str]:
        """Names of the documents that appear in these contexts, sorted."""
        present = np.unique(self.doc_ids[self.doc_ids >= 0])
        return sorted(self.doc_names[i] for i in present)

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance: what was asked, what came out, and checksums of both."""
        tokens = np.ascontiguousarray(self.tokens, dtype="<i4")
        return {
            "source": self.source,
            "split": self.split,
            "seed": self.seed,
            "split_seed": self.split_seed,
            "context_len": self.context_len,
            "n_contexts": self.n_contexts,
            "n_tokens": self.n_contexts * self.context_len,
            "n_special_tokens": int(self.special_mask.sum()),
            "prepend_bos": self.prepend_bos,
            "validation_fraction": self.validation_fraction,
            "n_source_documents": len(self.doc_names),
            "documents_sha256": self.documents_sha256,
            "tokenizer": self.tokenizer_name,
            "tokenizer_sha256": self.tokenizer_sha256,
            "tokens_sha256": hashlib.sha256(tokens.tobytes()).hexdigest(),
        }


def split_documents(
    n_docs: int, split: str, validation_fraction: float, seed: int, split_seed: int = 0
) -> tuple[np.ndarray, np.random.Generator]:
    """Indices of the split's documents, in packing order, and the generator to continue with.

    perm = default_rng(split_seed).permutation(n_docs); validation = perm[:n_val],
    train = perm[n_val:]; packing order = default_rng(seed).permutation of the split's documents.
    """
    if split not in ("train", "validation"):
        raise CorpusError(f"split must be 'train' or 'validation', not {split!r}")
    if not 0 <= validation_fraction < 1:
        raise CorpusError(f"validation_fraction must be in [0, 1), not {validation_fraction}")
    n_val = max(1, round(validation_fraction * n_docs)) if validation_fraction > 0 else 0
    if split == "validation" and n_val == 0:
        raise CorpusError("split='validation' needs validation_fraction > 0")
    if n_val and n_docs < 2:
        raise CorpusError(
            f"the source has {n_docs} document: a train/validation split by document needs at "
            "least 2 (separate documents by blank lines in a .txt), or pass validation_fraction=0"
        )
    if n_val >= n_docs:
        raise CorpusError(
            f"validation_fraction={validation_fraction} leaves none of the {n_docs} documents for "
            "training; use a smaller fraction"
        )
    perm = np.random.default_rng(split_seed).permutation(n_docs)
    members = perm[:n_val] if split == "validation" else perm[n_val:]
    rng = np.random.default_rng(seed)
    return members[rng.permutation(len(members))], rng


def pack_windows(
    flat: np.ndarray,
    offsets: np.ndarray,
    order: np.ndarray,
    context_len: int,
    bos: int | None,
    eos: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pack documents `order` end to end, each followed by `eos`, and cut windows.

    Returns (tokens, doc_ids), both [n_windows, context_len] int32; doc_ids is -1 at bos/eos.
    With `bos`, each window is bos ‖ (context_len − 1) stream tokens; the ragged tail is dropped.
    """
    pieces, owners = [], []
    for doc in order:
        pieces += [flat[offsets[doc] : offsets[doc + 1]], np.array([eos], dtype=np.int32)]
        owners += [
            np.full(offsets[doc + 1] - offsets[doc], doc, np.int32),
            np.array([-1], np.int32),
        ]
    stream, stream_doc = np.concatenate(pieces), np.concatenate(owners)
    body = context_len - (bos is not None)
    n_windows = len(stream) // body
    tokens = stream[: n_windows * body].reshape(n_windows, body)
    doc_ids = stream_doc[: n_windows * body].reshape(n_windows, body)
    if bos is not None:
        tokens = np.concatenate([np.full((n_windows, 1), bos, np.int32), tokens], axis=1)
        doc_ids = np.concatenate([np.full((n_windows, 1), -1, np.int32), doc_ids], axis=1)
    return tokens, doc_ids


def make_contexts(
    tokenizer: Any,
    source: str | os.PathLike = "brown",
    context_len: int = 128,
    n_tokens: int | None = None,
    split: str = "train",
    validation_fraction: float = 0.05,
    seed: int = 0,
    prepend_bos: bool = True,
    text_field: str = "text",
    split_seed: int = 0,
) -> TokenContexts:
    """Deterministic [n_contexts, context_len] token contexts of one split (see the module docstring).

    n_tokens: how many tokens to return, rounded up to whole contexts (None: the whole split);
    more than the split holds raises `CorpusError` naming how many it holds.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise CorpusError(
            f"tokenizer {tokenizer.name_or_path!r} has no eos_token_id to separate documents"
        )
    bos = (
        (tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos)
        if prepend_bos
        else None
    )
    if context_len < 1 + prepend_bos:
        raise CorpusError(f"context_len must be at least {1 + prepend_bos}, not {context_len}")
    if n_tokens is not None and n_tokens < 1:
        raise CorpusError(f"n_tokens must be positive, not {n_tokens}")
    name = os.fspath(source)
    docs = load_documents(name, text_field)
    order, rng = split_documents(len(docs), split, validation_fraction, seed, split_seed)
    flat, offsets = tokenize_documents(tokenizer, docs)
    tokens, doc_ids = pack_windows(flat, offsets, order, context_len, bos, eos)
    n_available = len(tokens)
    if n_available == 0:
        raise CorpusError(
            f"the {split} split of {name!r} ({len(order)} documents) holds no complete context of "
            f"{context_len} tokens; use a shorter context_len or a larger source"
        )
    wanted = n_available if n_tokens is None else math.ceil(n_tokens / context_len)
    if wanted > n_available:
        raise CorpusError(
            f"asked for {wanted} contexts of {context_len} tokens (n_tokens={n_tokens}), but the "
            f"{split} split of {name!r} holds {n_available} contexts = {n_available * context_len} "
            f"tokens ({len(order)} documents); ask for at most {n_available * context_len} tokens, "
            "or use a larger source"
        )
    pick = rng.permutation(n_available)[:wanted]
    tokens, doc_ids = tokens[pick], doc_ids[pick]
    return TokenContexts(
        tokens=tokens,
        doc_ids=doc_ids,
        special_mask=doc_ids < 0,
        source=name,
        split=split,
        seed=seed,
        split_seed=split_seed,
        prepend_bos=prepend_bos,
        validation_fraction=validation_fraction,
        tokenizer_name=str(tokenizer.name_or_path),
        tokenizer_sha256=tokenizer_fingerprint(tokenizer),
        documents_sha256=documents_checksum(docs),
        doc_names=[doc.doc_id for doc in docs],
    )
