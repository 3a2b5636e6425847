"""Where saesteer keeps what it downloads or converts once and reuses.

    $SAESTEER_CACHE_DIR            (default: ~/.cache/saesteer)
        models/<name>-<sha16>/     converted default model (HF safetensors + tokenizer)
        tokenizers/<name>-<sha16>/ tokenizer extracted from the GGUF (fast path for tiny-test)
        corpora/<name>/            corpora fetched with npm

Writers in this package create a sibling temporary folder, fill it, and rename it into place, so a
killed process never leaves a half-written folder under a final name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "SAESTEER_CACHE_DIR"


def cache_dir() -> Path:
    """Root folder of saesteer's reusable artefacts (env `SAESTEER_CACHE_DIR` overrides), created
    if missing; an OSError saying which setting to change when it is a file or cannot be made."""
    given = os.environ.get(CACHE_ENV)
    path = Path(given or Path.home() / ".cache" / "saesteer").expanduser()
    if given:
        where, fix = f"{CACHE_ENV}={given}", f"point {CACHE_ENV} at a folder you can write"
    else:
        where, fix = f"The default cache folder {path}", f"set {CACHE_ENV} to a writable folder"
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{where} is a file, not a folder; {fix}.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"Cannot create {where} ({error.strerror or error}); {fix}.") from None
    return path


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on `path` (created if missing); released when the block exits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_directory(final: Path, *, marker: str) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success rename it to `final`.

    An existing non-empty `final` is replaced only if it holds `marker` (a file every folder of
    this kind has, e.g. "report.json"): saesteer never deletes a folder it did not write, such as
    a user's `--out .`. On an exception the temporary folder is deleted and `final` left untouched.
    """
    final = Path(final)
    if final.is_dir() and any(final.iterdir()) and not (final / marker).exists():
        raise FileExistsError(
            f"{final} already holds files that are not saesteer's output (no {marker}); "
            "choose another output folder, or empty it first."
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(
            tmp, 0o666 & ~current_umask()
        )  # mkstemp's 0600 would hide shared outputs from colleagues
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
