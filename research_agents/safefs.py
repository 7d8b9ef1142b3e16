"""The one way files in a run directory (OUT) are created and replaced: never through a symlink,
whole or not at all, and only inside OUT.

`write_text` writes a fresh temp file (O_EXCL: never an existing name, so never a symlink planted
in its place) in the target's directory and renames it over the target: a symlink at the target
is replaced, never followed, and a reader sees the old file or the new one, never half of one.
`open_lock` opens (or makes) a lock file with O_NOFOLLOW and refuses anything but a regular file.
With `root`, a path whose directory resolves outside `root` (a symlinked sub-directory, `..` in a
name) is refused. Every refusal is `UnsafePath` (a ValueError) with one line.
`write_failure(err)` says in one line whether an exception is the file system refusing a write
(disk full, quota, read-only, permissions, a directory or file where the other is needed, the
SQLite store unable to write): the run stops on it, its recorded trials kept, instead of a
traceback or a trial failure that spends the budget.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import tempfile
from pathlib import Path

from research_agents.signals import held

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafePath(ValueError):
    """A path the run must not write: a symlink, not a regular file, or outside the run directory."""


WRITE_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO", "EFBIG", "ENOTDIR", "EISDIR", "EEXIST", "ELOOP")
    if hasattr(errno, name))
SQLITE_WRITE = ("disk is full", "disk i/o error", "readonly database", "unable to open database file")


def write_failure(err: BaseException) -> str | None:
    """One line when `err`, or an exception that caused it, is the file system refusing a write;
    None for anything else."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, UnsafePath):
            return str(cur)
        if isinstance(cur, OSError) and cur.errno in WRITE_ERRNOS:
            where = f" {cur.filename}" if cur.filename else ""
            return f"cannot write{where}: {cur.strerror or cur}"
        if isinstance(cur, sqlite3.OperationalError) and any(t in str(cur).lower() for t in SQLITE_WRITE):
            return f"cannot write the store: {' '.join(str(cur).split())}"
        cur = cur.__cause__ or cur.__context__
    return None


def check_inside(path: Path, root: Path | None) -> None:
    """UnsafePath unless `path`'s directory resolves inside `root` (None: no check)."""
    if root is None:
        return
    real_root = Path(os.path.realpath(root))
    real_dir = Path(os.path.realpath(Path(path).parent))
    if real_dir != real_root and real_root not in real_dir.parents:
        raise UnsafePath(f"{path} resolves outside the run directory {root} (to {real_dir}); refusing to write it")


def write_text(path: Path, text: str, root: Path | None = None) -> None:
    """`path` holds `text` (UTF-8), written atomically without following a symlink at `path`."""
    write_bytes(path, text.encode("utf-8"), root)


def write_bytes(path: Path, data: bytes, root: Path | None = None) -> None:
    path = Path(path)
    check_inside(path, root)
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise UnsafePath(f"{path} is a directory, not a file; move it away")
    except FileNotFoundError:
        pass
    with held():  # Ctrl-C waits for the end of the write: no temp file is left behind, no file half-written
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # O_EXCL, mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644 & ~_umask())
            os.replace(tmp, path)  # rename replaces a symlink at `path`; it never writes through it
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def open_lock(path: Path, root: Path | None = None) -> int:
    """A read-write descriptor of the regular file `path` (made when missing), never through a symlink."""
    path = Path(path)
    check_inside(path, root)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW | CLOEXEC, 0o644)
    except OSError as err:
        if os.path.islink(path):
            raise UnsafePath(f"{path} is a symbolic link; a run never writes through one: remove it") from None
        if os.path.isdir(path):
            raise UnsafePath(f"{path} is a directory, not a lock file; move it away") from None
        raise UnsafePath(f"{path} cannot be opened: {err.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{path} is not a regular file; move it away")
    return fd


def open_read(path: Path) -> int:
    """A read-only descriptor of `path`, never through a symlink (OSError as os.open raises it)."""
    return os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC)


__all__ = ["UnsafePath", "check_inside", "open_lock", "open_read", "write_bytes", "write_failure", "write_text"]
