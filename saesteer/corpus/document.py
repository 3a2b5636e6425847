"""What every corpus source yields, and the error it raises."""

from __future__ import annotations

from dataclasses import dataclass

SOURCES_HELP = (
    "'brown', a .txt/.jsonl/.parquet file, a folder of .txt files, or 'hf:NAME[:CONFIG]:SPLIT'"
)


class CorpusError(ValueError):
    """A corpus source that cannot be read or cannot give what was asked of it."""


@dataclass(frozen=True)
class Document:
    """One document of a source: a stable id (`ca01`, `notes.txt:3`, …) and its text."""

    doc_id: str
    text: str
