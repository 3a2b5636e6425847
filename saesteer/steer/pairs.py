"""Preference pairs: the JSONL schema, readers with file:line errors, and converters.

One pair per JSONL line (UTF-8):

    {"prompt": "Write a review of the film.",        required, non-empty string
     "chosen": " A warm, funny delight.",            required: the completion to move towards
     "rejected": " A dull, tiresome mess.",          required: the completion to move away from
     "system": "You are a film critic.",             optional: system message (chat prompts only)
     "history": [{"role": "user", "content": ..},    optional: earlier chat turns before `prompt`
                 {"role": "assistant", "content": ..}],
     "metadata": {"source": "..."}}                  optional: anything JSON, kept as is

Blank lines and lines starting with `//` are skipped; a leading UTF-8 byte-order mark is allowed.
Text must be valid Unicode: a line that is not UTF-8, or a string holding a lone surrogate (a JSON
escape such as "\\ud800"), is a `PairsFormatError` naming the file and line. Whether the prompt is
wrapped in the model's chat template is decided when the pairs are tokenized
(`saesteer.steer.batching`), not here.

Converters from the formats people already have:
    from_bipo_csv(path)              BiPO CSV: question, matching, not_matching
    from_yapo_records(rows)          YaPO / TRL style: prompt, chosen, rejected (strings or messages)
    from_steering_vectors(pairs)     steering-vectors: (positive, negative) str or UTF-8 bytes tuples
    from_repeng(entries)             repeng: DatasetEntry(positive=..., negative=...)
    from_hf_dataset(ds, mapping)     any Hugging Face dataset with a column mapping
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")


class PairsFormatError(ValueError):
    """A preference-pair file or record is malformed; the message names the file and line."""


@dataclass(frozen=True)
class PreferencePair:
    """One preference: after `prompt`, `chosen` is preferred to `rejected`."""

    prompt: str
    chosen: str
    rejected: str
    system: str | None = None
    history: tuple[dict[str, str], ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The JSONL record of this pair (optional fields only when set)."""
        record = asdict(self)
        record["history"] = list(self.history)
        return {k: v for k, v in record.items() if v not in (None, [], {})}

    def messages(self) -> list[dict[str, str]]:
        """Chat messages up to and including the user's `prompt` (system, history, user)."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.history, {"role": "user", "content": self.prompt}]


def _where(source: str, line: int | None) -> str:
    return f"{source}:{line}" if line is not None else source


def _check_unicode(value: Any, where: str, key: str) -> None:
    """Refuse text holding a lone surrogate (JSON "\\ud800"): it is not Unicode, and encoding it for
    the tokenizer or for `write_pairs` would fail far from its source."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError as error:
        bad = error.object[error.start : error.end]
        raise PairsFormatError(
            f"{where}: field {key!r} contains a lone surrogate {bad!r} (an escape such as "
            '"\\ud800" without its pair), which is not valid Unicode text; fix or remove it.'
        ) from None


def pair_from_record(
    record: Any, source: str = "<record>", line: int | None = None
) -> PreferencePair:
    """Validate one JSON object against the schema; errors name `source:line` and the fix."""
    where = _where(source, line)
    if not isinstance(record, Mapping):
        raise PairsFormatError(
            f"{where}: expected a JSON object with prompt/chosen/rejected, "
            f"got {type(record).__name__}."
        )
    known = {"prompt", "chosen", "rejected", "system", "history", "metadata"}
    unknown = sorted(set(record) - known)
    if unknown:
        raise PairsFormatError(
            f"{where}: unknown field(s) {unknown}; allowed: {sorted(known)}. "
            'Put extra information under "metadata".'
        )
    for key in ("prompt", "chosen", "rejected"):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            raise PairsFormatError(
                f"{where}: field {key!r} must be a non-empty string, got {value!r}."
            )
    if record["chosen"] == record["rejected"]:
        raise PairsFormatError(
            f"{where}: 'chosen' and 'rejected' are identical; a pair must differ."
        )
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise PairsFormatError(f"{where}: 'system' must be a string or absent.")
    history = record.get("history", [])
    if not isinstance(history, list) or not all(
        isinstance(m, Mapping) and m.get("role") in ROLES and isinstance(m.get("content"), str)
        for m in history
    ):
        raise PairsFormatError(
            f"{where}: 'history' must be a list of {{\"role\": one of {ROLES}, "
            '"content": string}} messages.'
        )
    metadata = record.get("metadata", {})
    if not isinstance(metadata, Mapping):
        raise PairsFormatError(f"{where}: 'metadata' must be a JSON object.")
    for key in ("prompt", "chosen", "rejected", "system", "history"):
        _check_unicode(record.get(key), where, key)
    _check_unicode(dict(metadata), where, "metadata")
    return PreferencePair(
        prompt=record["prompt"],
        chosen=record["chosen"],
        rejected=record["rejected"],
        system=system,
        history=tuple({"role": m["role"], "content": m["content"]} for m in history),
        metadata=dict(metadata),
    )


def _decode_line(raw: bytes, path: Path, number: int) -> str:
    """Line `number` of a pair file as text (UTF-8; a byte-order mark may open line 1)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PairsFormatError(
            f"{path}:{number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column "
            f"{error.start + 1}); pair files must be UTF-8: re-save it as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed.jsonl`."
        ) from None
    return text.removeprefix("\ufeff") if number == 1 else text


def read_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    """Read a JSONL file of pairs (schema in the module docstring). Empty files are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Preference-pair file {path} does not exist.")
    pairs = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        text = _decode_line(raw, path, number).strip()
        if not text or text.startswith("//"):
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise PairsFormatError(
                f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno})."
            ) from None
        pairs.append(pair_from_record(record, str(path), number))
    if not pairs:
        raise PairsFormatError(
            f"{path}: no preference pairs found (the file is empty); write one "
            "JSON object per line with prompt, chosen and rejected."
        )
    return pairs


def write_pairs(pairs: Iterable[PreferencePair], path: str | os.PathLike) -> None:
    """Write pairs as JSONL (atomic)."""
    from saesteer.paths import atomic_write_bytes

    text = "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in pairs)
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def pairs_checksum(pairs: Sequence[PreferencePair]) -> str:
    """sha256 (hex, first 16) of the pairs' canonical JSON: identifies the training data."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(json.dumps(pair.to_json(), sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- converters


def _read_bipo_rows(path: Path) -> list[PreferencePair]:
    """The rows of a BiPO CSV (UTF-8, optional byte-order mark) as pairs."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        need = {"question", "matching", "not_matching"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise PairsFormatError(
                f"{path}:1: BiPO CSV needs the header columns {sorted(need)}, "
                f"got {reader.fieldnames}."
            )
        return [
            pair_from_record(
                {
                    "prompt": row["question"],
                    "chosen": row["matching"],
                    "rejected": row["not_matching"],
                },
                str(path),
                reader.line_num,
            )
            for row in reader
        ]


def from_bipo_csv(path: str | os.PathLike) -> list[PreferencePair]:
    """BiPO CSV (header `question,matching,not_matching`): matching → chosen."""
    path = Path(path)
    try:
        pairs = _read_bipo_rows(path)
    except UnicodeDecodeError as error:
        raise PairsFormatError(
            f"{path}: not UTF-8 (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
            "BiPO CSV files must be UTF-8: re-save it as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed.csv`."
        ) from None
    if not pairs:
        raise PairsFormatError(f"{path}: the CSV has a header but no rows.")
    return pairs


def _text_of(value: Any, where: str, key: str) -> tuple[str, list[dict[str, str]], str | None]:
    """A string, or a chat message list → (last message text, earlier turns, system)."""
    if isinstance(value, str):
        return value, [], None
    if not (isinstance(value, list) and value):
        raise PairsFormatError(f"{where}: {key!r} must be a string or a list of chat messages.")
    for number, m in enumerate(value, start=1):
        if not (
            isinstance(m, Mapping) and m.get("role") in ROLES and isinstance(m.get("content"), str)
        ):
            raise PairsFormatError(
                f'{where}: {key!r} message {number} needs a "role" (one of {ROLES}) and a '
                f'string "content", got {m!r:.80}.'
            )
    system = next((m["content"] for m in value if m["role"] == "system"), None)
    turns = [dict(role=m["role"], content=m["content"]) for m in value if m["role"] != "system"]
    if not turns:
        raise PairsFormatError(
            f"{where}: {key!r} has no user or assistant message (only system messages)."
        )
    return turns[-1]["content"], turns[:-1], system


def _mapping(row: Any, where: str) -> Mapping[str, Any]:
    """`row` if it is a mapping (a dict-like record), else a clear error."""
    if not isinstance(row, Mapping):
        raise PairsFormatError(
            f"{where}: expected a mapping with prompt/chosen/rejected, got {type(row).__name__}."
        )
    return row


def from_yapo_records(
    rows: Iterable[Mapping[str, Any]], source: str = "<records>"
) -> list[PreferencePair]:
    """YaPO / TRL preference rows: `prompt`, `chosen`, `rejected` as strings or message lists."""
    pairs = []
    for index, row in enumerate(rows, start=1):
        where = _where(source, index)
        row = _mapping(row, where)
        prompt, history, system = _text_of(row.get("prompt"), where, "prompt")
        chosen, _, _ = _text_of(row.get("chosen"), where, "chosen")
        rejected, _, _ = _text_of(row.get("rejected"), where, "rejected")
        pairs.append(
            pair_from_record(
                {
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "history": history,
                    **({"system": system} if system else {}),
                },
                source,
                index,
            )
        )
    return pairs


def _split_shared_prefix(positive: str, negative: str) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) from two full texts: the prompt is their common word prefix."""
    cut = 0
    for i, (a, b) in enumerate(zip(positive, negative, strict=False)):
        if a != b:
            break
        cut = i + 1
    while cut > 0 and not positive[cut - 1].isspace():
        cut -= 1  # back up to a word boundary so completions start with whole words
    prompt = positive[:cut].rstrip()
    return prompt, positive[len(prompt) :], negative[len(prompt) :]


def _as_text(value: Any, where: str, name: str) -> str:
    """A string as is, UTF-8 bytes decoded (`str(b"..")` would be the text "b'..'"), else an error."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise PairsFormatError(
                f"{where}: {name} is not UTF-8 ({error.reason} at byte {error.start}); decode it "
                "to a string first."
            ) from None
    if not isinstance(value, str):
        raise PairsFormatError(
            f"{where}: {name} must be a string (or UTF-8 bytes), got {value!r:.60}."
        )
    return value


def from_steering_vectors(
    pairs: Iterable[tuple[str, str]], source: str = "<tuples>"
) -> list[PreferencePair]:
    """steering-vectors `(positive, negative)` full texts; their common prefix becomes the prompt."""
    out = []
    for index, item in enumerate(pairs, start=1):
        where = _where(source, index)
        if isinstance(item, str | bytes) or not (isinstance(item, Sequence) and len(item) == 2):
            raise PairsFormatError(
                f"{where}: expected a (positive, negative) tuple, got {type(item).__name__}."
            )
        positive, negative = (
            _as_text(item[0], where, "positive"),
            _as_text(item[1], where, "negative"),
        )
        prompt, chosen, rejected = _split_shared_prefix(positive, negative)
        if not prompt:
            raise PairsFormatError(
                f"{_where(source, index)}: positive and negative share no prompt "
                "prefix; give a common prompt or use the JSONL schema."
            )
        out.append(
            pair_from_record(
                {"prompt": prompt, "chosen": chosen, "rejected": rejected}, source, index
            )
        )
    return out


def from_repeng(entries: Iterable[Any], source: str = "<repeng>") -> list[PreferencePair]:
    """repeng `DatasetEntry(positive=..., negative=...)` objects (or dicts with those keys)."""
    tuples = []
    for entry in entries:
        get = entry.get if isinstance(entry, Mapping) else lambda k, e=entry: getattr(e, k, None)
        tuples.append((get("positive"), get("negative")))
    return from_steering_vectors(tuples, source)


def from_hf_dataset(
    dataset: Iterable[Mapping[str, Any]],
    mapping: Mapping[str, str] | None = None,
    source: str = "<dataset>",
) -> list[PreferencePair]:
    """Rows of a Hugging Face dataset; `mapping` maps our fields to its columns, e.g.
    `{"prompt": "question", "chosen": "answer_matching_behavior", "rejected": "answer_not_matching_behavior"}`."""
    mapping = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", **(mapping or {})}
    rows = []
    for index, row in enumerate(dataset, start=1):
        row = _mapping(row, _where(source, index))
        missing = [col for col in mapping.values() if col not in row]
        if missing:
            raise PairsFormatError(
                f"{_where(source, index)}: column(s) {missing} not in the dataset "
                f"(has {sorted(row)}); fix the column mapping."
            )
        rows.append({ours: row[theirs] for ours, theirs in mapping.items()})
    return from_yapo_records(rows, source)
