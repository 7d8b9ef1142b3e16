"""A run session: the run directory (OUT), its run file (run.json) and its store, opened or started.

`RunFile` is run.json as a typed model: the study, the budget, the arguments a resume must match
and what the report's set-up and reproduce command say. A run.json written by an older version
(without scale, executor, workers, speculate or llm) still opens.

`open_run` opens an existing run read-only (`status`, `report`): it creates and writes nothing.
`check_start` checks, before anything is written, everything that would stop a run: the storage
URL, OUT (writable, not locked), the run it may already hold (the same study and arguments) and
that run's store (readable: a run never starts over on a lost one). `started` then takes the
run's lock (`fcntl.flock` on OUT/.lock, held for as long as the process lives: the kernel drops it
on any exit, SIGKILL included, so no stale lock outlives its run), opens the store and writes
run.json. Every refusal is a BadInput of one line (exit code 2).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from research_agents import redact, safefs
from research_agents.config.plan import BadInput, Plan, make_plan
from research_agents.config.runforms import point_plan
from research_agents.config.study import Study

if TYPE_CHECKING:
    from research_agents.store import OptunaStore

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
TRIALS_DIR = "trials"
# a resume must keep these parts of the study definition (its question or planner settings may change)
RESUME_KEEPS = ("arms", "base", "seeds", "comparisons", "points")


# ------------------------------------------------------------------ run.json


class SavedStudyInvalid(BadInput):
    """run.json's study does not validate (a run of another study definition, or a damaged file)."""


class RunFile(BaseModel):
    """OUT/run.json: what a run was started with (the field order is the file's). Strict: a
    hand-edited "budget": "20" (or any value of the wrong type) is refused naming the field, never
    converted."""

    model_config = ConfigDict(extra="ignore", strict=True)

    study: Study
    budget: int = Field(ge=1)
    confirm_seeds: int | None = Field(None, ge=2)  # --seeds
    preset: str
    overrides: dict[str, Any] = Field(default_factory=dict)  # --set, --device, --save-model, --checkpoint-every
    planner: str | None = None
    storage: str | None = None  # --storage (written without its password); None: sqlite in OUT
    scale: str | None = None  # (absent from a run.json written before scales existed)
    experiments: list[str] | None = None  # a point run's experiments; None: a search
    executor: str | None = None  # how trials ran, described
    workers: int | None = Field(None, ge=1)
    speculate: bool = True
    llm: dict[str, Any] | None = None  # LLM planners: endpoint and model, never the key
    run_id: str | None = None  # this run's identity, also stamped in its store (absent before stores had one)
    # early stops (--rungs): the margin's factor over the seed noise and its late allowance, resolved
    # (rungs.late_allowance), so a resume keeps the rule; None: every search run in full
    rungs: float | None = Field(None, gt=0)
    rungs_late: float | None = Field(None, ge=0)

    @classmethod
    def read(cls, out: Path) -> RunFile | None:
        """OUT/run.json (None when there is none; BadInput in one line when it is damaged, and
        SavedStudyInvalid when its study does not validate)."""
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
        try:
            Study.model_validate(saved["study"])
        except ValidationError as e:
            raise SavedStudyInvalid(f"{path}: the saved study is not valid ({e.error_count()} error(s)); "
                                    "restore run.json") from None
        try:
            return cls.model_validate(saved)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BadInput(f"{path} is not a valid run file ({where}: {first['msg']}); restore it, or use "
                           "another --out") from None

    def write(self, out: Path) -> None:
        """OUT/run.json, whole or not at all, never through a symlink (safefs); a --storage password
        is never written (user:***@host: give --storage again, or PGPASSWORD, to resume)."""
        unset = {k for k in ("llm", "run_id") if getattr(self, k) is None}
        unset |= {k for k in ("rungs", "rungs_late") if k not in self.model_fields_set}  # (an older run.json)
        saved = self.model_dump(mode="json", exclude=unset or None)
        saved["storage"] = redact.without_password(self.storage)
        text = json.dumps(saved, indent=1)
        safefs.write_text(Path(out) / RUN_FILE, text, root=out)

    def plan(self) -> Plan:
        """The budget plan this run was started with."""
        if self.experiments is not None:
            return point_plan(self.study, self.study.select_points(self.experiments), self.budget)
        from research_agents.analysis.fairness import swap_pairs
        from research_agents.planners import sizes_confirmation

        plan = make_plan(self.study, self.budget, self.confirm_seeds, adaptive=sizes_confirmation(self.planner),
                         swap_pairs=swap_pairs(self.study))
        plan.rungs, plan.rungs_late = self.rungs, self.rungs_late
        return plan

    def rungs_flags(self) -> str:
        """The `run` flags that give this run's early-stop rule ("": none, every search run in full)."""
        from research_agents.rungs import late_allowance

        return "" if self.rungs is None else f"--rungs {self.rungs:g} --rungs-late {late_allowance(self.rungs_late):g}"

    def keeps_rungs(self, before: RunFile, out: Path) -> RunFile:
        """This run resuming `before` with its early-stop rule: the saved one when no --rungs was given
        (BadInput in one line when another was; a run.json written before the rule was kept says
        nothing, and the flags decide)."""
        if "rungs" not in before.model_fields_set:
            return self
        if self.rungs is None and self.rungs_late is None:
            return self.model_copy(update={"rungs": before.rungs, "rungs_late": before.rungs_late})
        if (self.rungs, self.rungs_late) != (before.rungs, before.rungs_late):
            keep = before.rungs_flags()
            raise BadInput(f"{out} holds a run " + (f"that stops search runs at rungs ({keep}): resume it with those "
                           "flags or none" if keep else "that trains every search run in full: resume it without "
                           "--rungs") + ", or use another --out")
        return self

    def resumes(self, before: RunFile) -> bool:
        """May this run continue the run saved as `before`? The same study definition (RESUME_KEEPS),
        preset, scale and overrides (device aside); a point run may add experiments but not drop any
        (their runs would count against the budget)."""
        old_study, new_study = before.study.model_dump(mode="json"), self.study.model_dump(mode="json")
        if any(old_study.get(k) != new_study.get(k) for k in RESUME_KEEPS) or before.preset != self.preset:
            return False
        if "scale" in before.model_fields_set and before.scale != self.scale:
            return False  # (a run saved before scales existed has no "scale": its study definition decides)
        if _fixed(before.overrides) != _fixed(self.overrides):
            return False
        if before.experiments is None or self.experiments is None:
            return before.experiments is None and self.experiments is None
        return set(before.experiments) <= set(self.experiments)

    def command_line(self, out: Path, budget: int | None = None) -> str:
        """The `run` command that reproduces (or resumes) this run, with its LLM flags (never a key)."""
        from research_agents.planners.llm_client import OPENAI_URL

        parts = ["python -m research_agents run --study", self.study.name]
        if self.scale:
            parts += ["--scale", self.scale]
        if self.experiments is not None:
            parts += ["-e", *self.experiments]
        else:
            parts += ["--planner", self.planner or "auto"]
        parts += ["--budget", str(self.budget if budget is None else budget)]
        if self.rungs is not None:
            parts += self.rungs_flags().split()
        own_flags = ("device", "save_checkpoint", "save_checkpoint_every")
        sets = [f"{k}={json.dumps(v)}" for k, v in self.overrides.items() if k not in own_flags]
        if sets:
            parts += ["--set", *sets]
        if self.overrides.get("save_checkpoint_every"):
            parts += ["--checkpoint-every", str(self.overrides["save_checkpoint_every"])]
        if self.overrides.get("save_checkpoint"):
            parts.append("--save-model")
        line = " ".join([*parts, "--out", str(out)])
        if not self.llm:
            return line
        flags = f" --llm-model {self.llm['model']}"
        if self.llm.get("endpoint") and self.llm["endpoint"] != OPENAI_URL:
            flags = f" --llm-base-url {self.llm['endpoint']}" + flags
        if self.llm.get("on_error") == "fallback":
            flags += " --on-llm-error fallback"
        if self.llm.get("key_sent") and self.llm.get("endpoint") != OPENAI_URL:
            flags += " --llm-send-key"
        return line + flags


def _fixed(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides a resumed run must repeat: not the device, nor the checkpoint interval (it
    changes no number, so a run may be resumed with checkpoints it did not ask for before)."""
    return {k: v for k, v in overrides.items() if k not in ("device", "save_checkpoint_every")}


# ------------------------------------------------------------------ the run directory


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


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


# kernel and device file systems: a file written there is no file (or no write is kept)
PSEUDO_FS = frozenset({"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
                       "securityfs", "pstore", "bpf", "configfs", "fusectl", "mqueue", "binfmt_misc", "autofs",
                       "efivarfs", "hugetlbfs", "rpc_pipefs", "nsfs", "selinuxfs"})
PSEUDO_ROOTS = ("/proc", "/sys", "/dev")  # (where no mount table can be read)


def fs_type(path: Path) -> str | None:
    """The type of the file system holding `path` (Linux: the longest mount point above it in
    /proc/self/mounts), None when it cannot be told."""
    real = os.path.realpath(path)
    best, kind = "", None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return None
    return kind


def _pseudo_fs(path: Path) -> str | None:
    """What makes `path` a place no run can be kept (a kernel file system), None when it is not."""
    kind = fs_type(path)
    if kind is not None:
        return f"a {kind} file system" if kind in PSEUDO_FS else None
    real = os.path.realpath(path)
    return next((f"under {r}" for r in PSEUDO_ROOTS if real == r or real.startswith(r + "/")), None)


def check_writable(out: Path, what: str = "--out") -> None:
    """BadInput unless OUT is (or can be made as) a directory this process can write, on a file
    system that keeps files (not /proc, /sys or /dev)."""
    out = probe = Path(out)
    while not probe.exists() and probe != probe.parent:  # the directory it would be made in
        probe = probe.parent
    if not probe.is_dir():
        raise BadInput(f"{what} {out} exists and is not a directory" if probe == out else
                       f"{what} {out}: {probe} is not a directory")
    if (pseudo := _pseudo_fs(probe)) is not None:
        raise BadInput(f"{what} {out} is on {pseudo}, where no file of a run can be kept: use a directory on a disk")
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
    trials = out / TRIALS_DIR  # where every new trial is made: a real, writable directory of OUT, or none yet
    if trials.is_symlink() or (os.path.lexists(trials) and not trials.is_dir()):
        raise BadInput(f"{trials} is not a directory of the run (a {'symbolic link' if trials.is_symlink() else 'file'}"
                       "); a run makes its trials only inside --out: move it away (or restore the directory)")
    if trials.is_dir() and (_read_only_fs(trials) or not os.access(trials, os.W_OK | os.X_OK)):
        raise BadInput(f"{trials} is read-only, and a run makes its trials there (status and report only read it)")
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

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (removing it would race a new run)
            self.fd = None


# ------------------------------------------------------------------ sessions


@dataclass
class RunSession:
    """An opened run: its directory, its run file and its store."""

    out: Path
    run: RunFile
    store: OptunaStore

    @property
    def study(self) -> Study:
        return self.run.study


def open_store(out: Path, study: Study, url: str | None, readonly: bool = False,
               password_dropped: bool = False) -> OptunaStore:
    """The run's store (BadInput in one line when it cannot be opened: never rebuilt from empty).
    `password_dropped`: `url` is run.json's, whose password was never written (storage_url)."""
    from research_agents.store import OptunaStore, StoreError

    try:
        return OptunaStore.for_study(out, study, url=url, readonly=readonly)
    except StoreError as e:
        if password_dropped:
            raise BadInput(f"the --storage database cannot be used: {e}. {Path(out) / RUN_FILE} keeps no "
                           "password: give --storage URL with it again (or set PGPASSWORD)") from None
        held = holds_a_run(out)
        where = f"{out} holds a run ({held}) but its store" if held else "the store"
        raise BadInput(f"{where} cannot be used: {e}. The store is the record of the run and is never rebuilt "
                       "from empty: restore it (e.g. study.db from a backup), or use another --out") from None


def storage_url(saved: str | None, given: str | None) -> str | None:
    """The database URL to open: --storage when given, else run.json's (its masked password dropped,
    so that PGPASSWORD or ~/.pgpass supplies it)."""
    if given is not None:
        return given
    if saved is not None and redact.has_masked_password(saved):
        return redact.drop_masked_password(saved)
    return saved


# ------------------------------------------------------------------ the store's identity

IDENTITY = "identity"  # store metadata: which run (SQLite in OUT) and which study definition it holds


def definition_hash(study: Study) -> str:
    """What a resume must keep of a study (RESUME_KEEPS), as a short hash."""
    kept = {k: v for k, v in study.model_dump(mode="json").items() if k in RESUME_KEEPS}
    return hashlib.sha256(json.dumps([study.name, kept], sort_keys=True).encode()).hexdigest()[:16]


def check_identity(out: Path, run: RunFile, store: OptunaStore) -> None:
    """Refuse a store that holds another run (a study.db copied from another OUT) or another study
    definition under the same name (run.json lost and the study file changed). A store from before
    stores had an identity passes. A shared database (--storage) is shared by design: there only the
    study definition must match."""
    ident = store.get_meta(IDENTITY)
    if not isinstance(ident, dict):
        return
    where = f"the store of {out}" if run.storage is None else "the --storage database"
    if ident.get("definition") != definition_hash(run.study):
        raise BadInput(f"{where} holds trials of another definition of study {run.study.name!r} (its arms, base, "
                       "seeds, comparisons or points differ): use the study file it was made with, or another --out")
    if run.storage is None and run.run_id and ident.get("run_id") and ident["run_id"] != run.run_id:
        raise BadInput(f"{where} belongs to another run (run id {ident['run_id']}, {Path(out) / RUN_FILE} says "
                       f"{run.run_id}): restore this run's study.db, or use another --out")


def stamp_identity(run: RunFile, store: OptunaStore) -> None:
    """Record in the store which run and study definition it holds (once)."""
    if store.get_meta(IDENTITY) is None:
        store.set_meta(IDENTITY, {"run_id": run.run_id if run.storage is None else None,
                                  "study": run.study.name, "definition": definition_hash(run.study)})


def open_run(out_text: str | Path, storage: str | None = None) -> RunSession:
    """An existing run directory, its store opened read-only (BadInput if it is not one, or its
    store cannot be read). `storage`: the --storage URL with its password (run.json keeps none).
    Creates and writes nothing."""
    out = Path(out_text)
    run = RunFile.read(out)
    if run is None:
        raise BadInput(f"{out} is not a run directory (no {RUN_FILE})")
    dropped = storage is None and redact.has_masked_password(run.storage)
    run = run.model_copy(update={"storage": storage_url(run.storage, storage)})
    store = open_store(out, run.study, run.storage, readonly=True, password_dropped=dropped)
    check_identity(out, run, store)
    return RunSession(out, run, store)


def check_start(out: Path, run: RunFile, storage_flag: str | None) -> RunFile:
    """Before anything is written: the storage URL, OUT (writable, not locked), the run it holds
    (the same study and arguments) and that run's store (readable). Returns `run` with the held
    run's storage when --storage is not given."""
    from research_agents.store import StoreError, check_url, default_url, sqlite_path

    if storage_flag is not None:
        try:
            check_url(storage_flag)
        except StoreError as e:
            raise BadInput(f"--storage: {e}") from None
    try:
        before = RunFile.read(out) if out.is_dir() else None
    except SavedStudyInvalid:  # a study this version cannot load is not the study asked for
        before, same = None, False
    else:
        same = before is None or run.resumes(before)
    if not same:
        raise BadInput(f"{out} holds a run of a different study definition, scale, preset, --set or "
                       "experiments; use another --out or the same arguments")
    if before is not None:
        run = run.keeps_rungs(before, out)
    dropped = False
    if before is not None and storage_flag is None:  # (run.json keeps no password: PGPASSWORD may give it)
        dropped = redact.has_masked_password(before.storage)
        run = run.model_copy(update={"storage": storage_url(before.storage, None)})
    check_out(out, sqlite_path(run.storage or default_url(out)))
    run_id = before.run_id if before is not None else None
    if holds_a_run(out):  # its store must open as it is (a store without a run is completed later)
        store = open_store(out, run.study, run.storage, readonly=True, password_dropped=dropped)
        ident = store.get_meta(IDENTITY) if before is None else None  # run.json lost: the store names the run
        run_id = run_id or (ident.get("run_id") if isinstance(ident, dict) else None)
        run = run.model_copy(update={"run_id": run_id})
        check_identity(out, run, store)
    return run.model_copy(update={"run_id": run_id or uuid.uuid4().hex})


@contextmanager
def started(out: Path, run: RunFile) -> Iterator[RunSession]:
    """`with started(out, run) as session:` OUT made, its lock held (one run per OUT), the store
    opened for writing and run.json written; the lock is released on leaving."""
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):  # the kernel drops the lock however this process ends
        store = open_store(out, run.study, run.storage)
        check_identity(out, run, store)
        run.write(out)
        stamp_identity(run, store)
        yield RunSession(out, run, store)


__all__ = ["LOCK_FILE", "RESUME_KEEPS", "RUN_FILE", "TRIALS_DIR", "RunFile", "RunLock", "RunSession",
           "SavedStudyInvalid", "check_out", "check_start", "check_writable", "holds_a_run", "lock_holder",
           "open_run", "open_store", "started", "trial_dirs"]
