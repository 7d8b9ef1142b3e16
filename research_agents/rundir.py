"""The run directory (OUT): checked before anything is written, and locked while a run uses it.

`check_out` says in one line (BadInput) why OUT cannot take a run: a file in its place, a
directory or file system that cannot be written, a read-only store or run file, another run
holding it. `RunLock` holds an OS lock (`fcntl.flock` on OUT/.lock) for as long as the run's
process lives; the kernel drops it on any exit, SIGKILL included, so no stale lock outlives its
run. `status` and `report` take no lock: they only read the store.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from research_agents import safefs
from research_agents.config.plan import BadInput

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
TRIALS_DIR = "trials"


def trial_dirs(out: Path) -> list[Path]:
    trials = Path(out) / TRIALS_DIR
    return sorted(p for p in trials.iterdir() if p.is_dir()) if trials.is_dir() else []


def holds_a_run(out: Path) -> str | None:
    """What shows that OUT holds a run ("run.json and 12 trial directories"), None when nothing does."""
    out = Path(out)
    if not out.is_dir():
        return None
    signs = [RUN_FILE] if (out / RUN_FILE).exists() else []
    if n := len(trial_dirs(out)):
        signs.append(f"{n} trial director{'y' if n == 1 else 'ies'}")
    return " and ".join(signs) or None


def read_run_file(out: Path) -> dict[str, Any] | None:
    """OUT/run.json (None when there is none; BadInput in one line when it is damaged)."""
    path = Path(out) / RUN_FILE
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BadInput(f"{path} cannot be read ({type(err).__name__}: {err}); it names the run's study and "
                       "store: restore it, or use another --out") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("study"), dict):
        raise BadInput(f"{path} is not a run file (no study); restore it, or use another --out")
    return saved


def write_run_file(out: Path, saved: dict[str, Any]) -> None:
    """OUT/run.json, whole or not at all, never through a symlink (safefs)."""
    safefs.write_text(Path(out) / RUN_FILE, json.dumps(saved, indent=1), root=out)


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_writable(out: Path, what: str = "--out") -> None:
    """BadInput unless OUT is (or can be made as) a directory this process can write."""
    out = probe = Path(out)
    while not probe.exists() and probe != probe.parent:  # the directory it would be made in
        probe = probe.parent
    if not probe.is_dir():
        raise BadInput(f"{what} {out} exists and is not a directory" if probe == out else
                       f"{what} {out}: {probe} is not a directory")
    if _read_only_fs(probe):
        raise BadInput(f"{what} {out} is on a read-only file system")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BadInput(f"{what} {out}: {probe} is not writable")


def check_out(out: Path, store_file: Path | None = None) -> None:
    """Everything about OUT that would stop a run, checked before the run writes anything."""
    out = Path(out)
    check_writable(out)
    for path in (out / RUN_FILE, store_file):
        if path is not None and path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise BadInput(f"{path} is read-only, and a run must write it (status and report only read it)")
    holder = lock_holder(out)
    if holder is not None:
        raise BadInput(busy(out, holder))


def busy(out: Path, holder: str) -> str:
    return (f"{out} is in use by another run ({holder}); wait for it to end or use another --out "
            "(status and report work meanwhile)")


def _holder_text(fd: int) -> str:
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return f"pid {text}" if text.isdigit() else "pid unknown"


def lock_holder(out: Path) -> str | None:
    """Who holds OUT's lock ("pid 123"), None when nobody does. Creates nothing."""
    try:
        fd = safefs.open_read(Path(out) / LOCK_FILE)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: conflicts only with a run's exclusive lock
    except BlockingIOError:
        return _holder_text(fd)
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return None


class RunLock:
    """`with RunLock(out):` the run's exclusive lock on OUT/.lock (BadInput when another holds it)."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:  # not inherited by trial processes; never through a symlink
            fd = safefs.open_lock(self.path, root=self.path.parent)
        except safefs.UnsafePath as err:
            raise BadInput(str(err)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            raise BadInput(busy(self.path.parent, holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (removing it would race a new run)
            self.fd = None


__all__ = ["RUN_FILE", "LOCK_FILE", "TRIALS_DIR", "RunLock", "check_out", "check_writable", "holds_a_run",
           "lock_holder", "read_run_file", "trial_dirs", "write_run_file"]
