"""One policy for every command's `--out`: what may be replaced, one writer, no lost version.

Ownership. Every output folder saesteer writes holds an owner marker, `.saesteer-output` (JSON:
the kind of output, e.g. "steering-code", and the saesteer version). A folder may be replaced or
continued only when it holds a marker of the same kind; a file, a non-empty folder without the
marker (a user's folder, an sae-lens SAE, `/`) or a folder of another kind is refused, *before* any
work, with the fix named. A common file name such as `code.json` is not ownership.

One writer. `Output` holds an advisory lock (`flock`) on `.NAME.lock` beside the folder for the
whole job; a second writer fails at once instead of silently replacing the first one's result.

No window. A replaced folder is written into a sibling temporary `.NAME.tmp-XXXX` (marked first)
and swapped in with `renameat2(RENAME_EXCHANGE)`: at every instant `NAME` is either the whole old
or the whole new version. Where the kernel or file system cannot exchange, the old folder is first
renamed to `.NAME.old-XXXX`, and the next writer restores it if a kill came between the renames.
Temporaries of killed runs (marked, under the lock, so never another live writer's) are removed.

Permissions follow the umask (`tempfile` would leave 0700 / 0600): a lab's shared SAEs and codes
stay readable to colleagues.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from saesteer.paths import current_umask

OWNER_FILE = ".saesteer-output"
RENAME_EXCHANGE = 2
AT_FDCWD = -100


class OutputError(FileExistsError):
    """An output path saesteer must not write (a file, a foreign folder, another kind)."""


def owner_kind(folder: Path) -> str | None:
    """The kind recorded in `folder`'s owner marker, or None when it has none (or it is damaged)."""
    try:
        return json.loads((folder / OWNER_FILE).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def check_output(path: str | os.PathLike, kind: str) -> Path:
    """Refuse `path` unless it is absent, an empty folder or a saesteer `kind` folder; returns it."""
    path = Path(path)
    resolved = path.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise OutputError(f"--out {path} is {resolved}: give a folder of its own for the {kind}.")
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {path} is a file; give a folder for the {kind}.")
    if path.is_dir() and any(path.iterdir()):
        found = owner_kind(path)
        if found is None:
            raise OutputError(
                f"--out {path} holds files saesteer did not write (no {OWNER_FILE} marker); "
                "choose another folder, or empty it first."
            )
        if found != kind:
            raise OutputError(
                f"--out {path} is a saesteer {found} folder, not a {kind}; choose another."
            )
    return path


def follow_umask(root: Path) -> None:
    """chmod `root` and everything under it to 0777 / 0666 minus the umask."""
    mask = current_umask()
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(Path(folder, name), 0o777 & ~mask)
        for name in files:
            os.chmod(Path(folder, name), 0o666 & ~mask)


def _mark(folder: Path, kind: str) -> None:
    from importlib.metadata import version

    record = {"kind": kind, "saesteer": version("saesteer")}
    (folder / OWNER_FILE).write_text(json.dumps(record))


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2); False where it is not supported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, f"Cannot swap {a} and {b}: {os.strerror(code)}")


def swap_into_place(new: Path, final: Path) -> None:
    """Make `new` the folder at `final` (module docstring: no window); the old version is deleted."""
    if not final.exists():
        os.rename(new, final)
        return
    if exchange(new, final):
        shutil.rmtree(new)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.rename(final, old / "version")
    os.rename(new, final)
    shutil.rmtree(old)


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the flock on `.NAME.lock` beside `path`; a second writer gets a clear error at once."""
    path = Path(path)
    parent = path.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    with open(parent / f".{path.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RuntimeError(
                f"Another saesteer job is writing {path}; wait for it or choose another --out."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Output:
    """The `--out` folder of one job: checked on creation (before any work), locked while used.

        output = Output(config.out, "steering-code")     # refuses a foreign folder at once
        with output:                                     # one writer; stale temporaries removed
            code = fit(...)
            with output.replacing() as tmp:              # fill tmp; swapped in on success
                save_code(code, tmp)

    `output.in_place()` instead creates and marks the folder itself, for jobs that fill it step by
    step and resume (SAE training, feature discovery).
    """

    def __init__(self, path: str | os.PathLike, kind: str) -> None:
        self.path = check_output(path, kind)
        self.kind = kind
        self._lock = None

    def __enter__(self) -> Output:
        self._lock = writer_lock(self.path)
        self._lock.__enter__()
        check_output(self.path, self.kind)  # again, now that no one else can change it
        self._recover()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.__exit__(*exc)
            self._lock = None

    def _recover(self) -> None:
        """Restore a version a kill left in `.NAME.old-*`; delete marked temporaries of dead runs."""
        parent = self.path.absolute().parent
        for old in sorted(parent.glob(f".{self.path.name}.old-*")):
            if not self.path.exists() and (old / "version").is_dir():
                os.rename(old / "version", self.path)
            shutil.rmtree(old, ignore_errors=True)
        for stale in parent.glob(f".{self.path.name}.tmp-*"):
            if stale.is_dir() and (owner_kind(stale) == self.kind or not any(stale.iterdir())):
                shutil.rmtree(stale, ignore_errors=True)

    def _require_lock(self) -> None:
        if self._lock is None:
            raise RuntimeError("Use the Output inside `with output:` (it holds the lock).")

    @contextlib.contextmanager
    def replacing(self) -> Iterator[Path]:
        """A marked temporary sibling to fill; on success it replaces the folder in one step."""
        self._require_lock()
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.absolute().parent)
        )
        try:
            _mark(tmp, self.kind)
            yield tmp
            follow_umask(tmp)
            swap_into_place(tmp, self.path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def in_place(self) -> Path:
        """Create and mark the folder (kept as it is when it is already this kind's)."""
        self._require_lock()
        self.path.mkdir(parents=True, exist_ok=True)
        if owner_kind(self.path) != self.kind:
            _mark(self.path, self.kind)
        os.chmod(
            self.path, 0o777 & ~current_umask()
        )  # its files: `atomic_write_bytes` follows the umask
        return self.path
