"""The default store: Optuna's RDB storage.

The backend is Optuna's RDB storage (SQLite file in the run directory, or any SQLAlchemy
URL), one Optuna study per arm, so optuna-dashboard can open a study. A trial is written as
RUNNING before it trains (in one transaction) and finished the moment it ends, its Optuna state
last; a trial still RUNNING when a new process opens the store was killed, and `recover()` hands
it back for a re-run.

Opening never silently makes a new store in place of a lost one: `readonly=True` (status,
report, the checks before a run) opens an existing database without creating or writing
anything (SQLite: a `mode=ro` URI; after a kill mid-write, a copy with its journal, since only a
writer may roll a hot journal back), and any database that cannot be read raises `StoreError`
with one line.

Cost per trial stays flat as a study grows: start() and finish() are one transaction each (one
commit, durable when they return), and the store keeps every TrialRecord in memory, updated by
its own writes. Several drivers may share one database (`--storage postgresql://...`): before
answering `records()` the store asks the database one cheap question (how many trials, the
largest id, how many finished) and re-reads only the trials that are new or were running when
the answer differs from what its own writes predict. start() numbers trials (`order`) under a
lock every driver of the study takes first, so two drivers never give out the same number.

A trial's record fields are its user attributes (`point` and `expected` too; a store written
before those were fields has them inside `rationale`, and TrialRecord reads them from there).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from research_agents.config.space import Param
from research_agents.records import TrialMetrics, TrialRecord, result_fields
from research_agents.redact import mask_url
from research_agents.store.base import BaseStore, StoreError

STUDY_META = "research_agents"
DB_FILE = "study.db"  # the default store: OUT/study.db
CONNECT_TIMEOUT_S = 10  # for database servers: an unreachable host fails in seconds, not minutes
TRANSACTION_TRIES = 5  # a write transaction that finds the database busy is tried again (as Optuna does)
_BUSY = re.compile(r"locked|deadlock|could not serialize|lock wait timeout", re.IGNORECASE)
_CREATE_RACE = re.compile(r"already exists|duplicate key|UniqueViolation|IntegrityError", re.IGNORECASE)
_RECORD_KEYS = tuple(set(TrialRecord.model_fields) - {"id", "arm", "params"})


def _batches() -> bool:
    """Whether start() and finish() can each be one transaction: they write Optuna's tables through
    its own SQLAlchemy models (the schema optuna-dashboard reads), which Optuna 4 and 5 have.
    Without them each attribute is its own commit through the public API, the state last."""
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session  # noqa: F401
    except ImportError:
        return False
    return all(hasattr(models, name) for name in ("StudyModel", "TrialModel", "TrialParamModel",
                                                  "TrialUserAttributeModel", "TrialValueModel")) \
        and hasattr(models.TrialValueModel, "value_to_stored_repr") and hasattr(models.TrialModel, "count_past_trials")


_BATCHED = _batches()


def default_url(out: Path) -> str:
    return f"sqlite:///{(Path(out) / DB_FILE).resolve()}"


def _one_line(err: BaseException) -> str:
    """The database's own words (Optuna wraps them in a generic StorageInternalError), on one line."""
    while isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__
    text = str(err).split("(Background on this error")[0].split("[SQL:")[0]
    return " ".join(text.split())[:300] or type(err).__name__


def _parse(url: str):
    """The SQLAlchemy URL object (StoreError when `url` is not one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        raise StoreError(f"{url!r} is not a SQLAlchemy URL (e.g. sqlite:///PATH.db, "
                         "postgresql://USER@HOST/DB)") from None


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for another backend or an in-memory database)."""
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database.removeprefix("file:"))


def describe(url: str) -> str:
    """The database for a message: its file for SQLite, else the URL without its password."""
    path = sqlite_path(url)
    _parse(url)  # StoreError when it is not a URL
    return str(path) if path is not None else mask_url(url)  # redact: the one mask for credentials


def readonly_url(url: str) -> str:
    """The same database opened so that nothing can be written to it (SQLite: a mode=ro URI;
    a server database as given: its reader opens no table and writes nothing)."""
    path = sqlite_path(url)
    if path is None:
        return url
    return f"sqlite:///file:{quote(str(path.resolve()))}?mode=ro&uri=true"


def _journal(path: Path) -> Path:
    return path.with_name(path.name + "-journal")


def _snapshot(path: Path) -> tempfile.TemporaryDirectory:
    """A private copy of a SQLite database and its rollback journal (removed with the object)."""
    tmp = tempfile.TemporaryDirectory(prefix="research-agents-store-")
    for src in (path, _journal(path)):
        if src.exists():
            shutil.copyfile(src, Path(tmp.name) / src.name)
    return tmp


def _process_start(pid: int) -> str:
    """When process `pid` started (Linux: clock ticks since boot, from /proc; elsewhere "")."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_driver() -> str:
    """This process as a trial's "driver" attribute: HOST:PID:START."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def abandoned(driver: str | None) -> bool:
    """Whether a running trial's driver is gone: this process (asking, so not running it), a
    process of this machine that has ended, or unknown (a store written before drivers were
    recorded). A driver on another machine is taken to be alive."""
    if driver is None or driver == this_driver():
        return True
    host, _, rest = driver.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname():
        return False  # another machine's: its own driver recovers it when it resumes
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        pass
    return bool(start) and _process_start(int(pid)) != start


OPTUNA_TABLES = frozenset({
    "alembic_version", "studies", "study_directions", "study_system_attributes", "study_user_attributes",
    "trial_heartbeats", "trial_intermediate_values", "trial_params", "trial_system_attributes",
    "trial_user_attributes", "trial_values", "trials", "version_info"})


def check_sqlite_file(path: Path | None) -> None:
    """StoreError (one line) when an existing SQLite file fails SQLite's quick integrity check or
    holds tables that are not Optuna's (another application's database: never added to). A file
    that is not a database at all is left to the open, which says so; read-only, writes nothing."""
    if path is None or not path.is_file() or path.stat().st_size == 0 or _journal(path).exists():
        return  # new, or a kill left it mid-write (then read from a rolled-back copy)
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            problems = [str(row[0]) for row in con.execute("PRAGMA quick_check(5)")]
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error:
        return
    if problems != ["ok"]:
        raise StoreError(f"{path} fails SQLite's integrity check: {_one_line(Exception('; '.join(problems)))}")
    foreign = sorted(t for t in tables - OPTUNA_TABLES if not t.startswith("sqlite_"))
    if foreign:
        raise StoreError(f"{path} holds tables that are not Optuna's ({', '.join(foreign[:5])}): another "
                         "application's database is never written to; name a file of its own")


def check_url(url: str) -> None:
    """StoreError (one line) unless `url` names a database that can be reached; writes nothing
    (a SQLite file is not created here, only its directory checked)."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is None:
            raise StoreError(f"{url}: an in-memory database keeps nothing; name a file")
        if not path.parent.is_dir():
            raise StoreError(f"{url}: directory {path.parent} does not exist")
        check_sqlite_file(path)
        return
    from sqlalchemy import create_engine

    args = {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_backend_name() in ("postgresql", "mysql") else {}
    engine = None
    try:
        engine = create_engine(parsed, connect_args=args)
        with engine.connect():
            pass
    except Exception as err:  # noqa: BLE001 - unknown dialect, missing driver, no server: one line
        raise StoreError(f"{describe(url)}: cannot connect: {type(err).__name__}: {_one_line(err)}") from None
    finally:
        if engine is not None:
            engine.dispose()


def distributions(space: dict[str, Param], params: dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions for `params`: the space's where it has one, else a one-value choice."""
    out = {}
    for key, value in params.items():
        p = space.get(key)
        if p is None or p.check(value) is not None:
            out[key] = CategoricalDistribution([value])
        elif p.type == "choice":
            out[key] = CategoricalDistribution(p.choices)
        elif p.type == "int":
            out[key] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[key] = FloatDistribution(p.low, p.high, log=p.log)
    return out


def searchable(space: dict[str, Param], params: dict[str, Any]) -> dict[str, Any]:
    """The params Optuna holds as trial params: those inside the arm's space. The rest (a named
    point's free spec overrides: lists, strings, values that vary across trials outside any
    distribution) live only in the trial's "params" user attribute, which holds them all."""
    return {k: v for k, v in params.items() if k in space and space[k].check(v) is None}



def _rung_values(record: TrialRecord, metrics: TrialMetrics | None) -> dict[int, float]:
    """A run under an early-stop rule: its val loss at each of the rule's steps it reached, as the
    Optuna trial's intermediate values (so Optuna's tools, e.g. optuna-dashboard, show the rungs;
    no Optuna pruner decides anything here: see research_agents/rungs.py)."""
    if not record.stop_above or metrics is None:
        return {}
    return {h.step: float(h.val_loss) for h in metrics.history
            if h.step in record.stop_above and h.val_loss is not None}

class OptunaStore(BaseStore):
    """Store on optuna.storages.RDBStorage: `sqlite:///OUT/study.db` unless a URL is given."""

    def __init__(self, url: str, study_name: str, arms: dict[str, dict[str, Param]], readonly: bool = False):
        """Open (readonly: only open, never create) the store; StoreError with one line when the
        database is missing, damaged, unreachable or lacks the study."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url = url
        self.readonly = readonly
        self.spaces = arms
        self.batched = _BATCHED  # start() and finish() one transaction each (tests turn it off)
        where = describe(url)
        path = sqlite_path(url)
        if readonly and path is not None and not path.is_file():
            raise StoreError(f"{where} does not exist")
        self._snapshot = None
        check_sqlite_file(path)  # integrity, and no other application's tables
        try:
            try:
                self._open(readonly_url(url) if readonly else url, study_name)
            except StoreError:
                raise
            except Exception as err:
                if not (readonly and path is not None and _journal(path).exists() and "readonly" in _one_line(err)):
                    raise
                # a process killed mid-write left a hot journal, which only a writer may roll back:
                # read a copy of the database and its journal (rolled back there, never in place)
                self._snapshot = _snapshot(path)
                self._open(f"sqlite:///{Path(self._snapshot.name) / path.name}", study_name)
        except StoreError:
            raise
        except Exception as err:  # noqa: BLE001 - SQLAlchemy, Optuna and driver errors alike: one line
            raise StoreError(f"{where} cannot be read as an Optuna database: {_one_line(err)}") from None

    def _open(self, url: str, study_name: str) -> None:
        for attempt in range(1, TRANSACTION_TRIES + 1):
            storage = None
            try:
                storage = optuna.storages.RDBStorage(url, heartbeat_interval=None, skip_table_creation=self.readonly)
                self.storage = storage
                self.studies = {arm: self._study(f"{study_name}:{arm}") for arm in self.spaces}
                break
            except Exception as err:
                # drivers opening a new database at once race to create its tables: the losers retry
                if self.readonly or attempt == TRANSACTION_TRIES or not _CREATE_RACE.search(_one_line(err)):
                    raise
                if storage is not None:
                    storage.engine.dispose()
                time.sleep(random.uniform(0.1, 0.5) * attempt)
        self._meta = self.studies[next(iter(self.spaces))]
        self._study_ids = [s._study_id for s in self.studies.values()]
        self._by_id: dict[int, TrialRecord] = {}
        self._ordered: list[TrialRecord] = []
        self._known: tuple | None = None  # the signature the in-memory records answer to
        self._drivers: dict[int, str | None] = {}  # trial id -> the process that started it
        self.records()  # read every trial once: a damaged database fails here, not mid-run

    def _study(self, name: str) -> optuna.Study:
        if not self.readonly:
            return optuna.create_study(storage=self.storage, study_name=name, direction="minimize",
                                       load_if_exists=True)
        try:
            self.storage.get_study_id_from_name(name)
        except KeyError:
            raise StoreError(f"{describe(self.url)} holds no study {name!r}") from None
        return optuna.load_study(storage=self.storage, study_name=name)

    @classmethod
    def for_dir(cls, out: Path, study_name: str, arms: dict[str, dict[str, Param]],
                url: str | None = None, readonly: bool = False) -> OptunaStore:
        if not readonly:
            out.mkdir(parents=True, exist_ok=True)
        return cls(url or default_url(out), study_name, arms, readonly=readonly)

    @classmethod
    def for_study(cls, out: Path, study, url: str | None = None, readonly: bool = False) -> OptunaStore:
        """The store of `study` in run directory `out` (one Optuna study per arm)."""
        return cls.for_dir(out, study.name, {a: arm.space for a, arm in study.arms.items()}, url=url,
                           readonly=readonly)

    # -- trials
    def start(self, arm, params, seed, origin, phase, round, rationale, run_dir, point=None,
              expected=None, swap=None, stop_above=None) -> TrialRecord:
        """One transaction: a process killed at any point leaves either no trial or a whole one."""
        fixed = searchable(self.spaces[arm], params)
        started = datetime.now(timezone.utc).isoformat()
        driver = this_driver()

        def template(order: int) -> FrozenTrial:
            attrs = dict(seed=seed, origin=origin, phase=phase, round=round, rationale=rationale,
                         point=point, expected=expected, run_dir=run_dir, order=order, status="running",
                         started=started, driver=driver,
                         **({"stop_above": {str(k): v for k, v in stop_above.items()}} if stop_above else {}))
            if swap is not None:  # (only swap runs carry it: other trials' attributes stay as they were)
                attrs["swap"] = swap.model_dump(mode="json")
            return FrozenTrial(number=0, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                               datetime_complete=None, params=fixed,
                               distributions=distributions(self.spaces[arm], fixed),
                               user_attrs={"params": params, **attrs}, system_attrs={}, intermediate_values={},
                               trial_id=0)

        trial_id, order = self._create(self.studies[arm]._study_id, template)
        # as records() reads it back: the JSON the database holds (a tuple comes back a list)
        record = TrialRecord(id=trial_id, arm=arm, params=json.loads(json.dumps(params)), seed=seed, origin=origin,
                             phase=phase, round=round, rationale=rationale, point=point, expected=expected,
                             swap=swap, run_dir=run_dir, order=order, stop_above=dict(stop_above or {}),
                             status="running")
        self._drivers[trial_id] = driver
        self._remember(record, created=True)
        return record

    def finish(self, record, status, metrics, reason) -> TrialRecord:
        """One transaction: the result fields and the Optuna state together (a process killed
        before it commits leaves the trial running, to be recovered and re-run)."""
        fields = result_fields(status, metrics, reason)
        attrs = {**fields, "finished": datetime.now(timezone.utc).isoformat()}
        done = status == "completed" and fields["val_loss"] is not None
        self._close(record.id, attrs, TrialState.COMPLETE if done else TrialState.FAIL,
                    fields["val_loss"] if done else None, _rung_values(record, metrics))
        record = record.model_copy(update=fields)
        self._remember(record, created=False)
        return record

    def records(self) -> list[TrialRecord]:
        """Every trial, in order: the in-memory records, re-read where another writer changed them."""
        signature = self._signature()
        if signature != self._known:
            self._refresh(signature)
        return list(self._ordered)

    def recover(self) -> list[TrialRecord]:
        """Trials left running by a process that died (or by this one): mark them interrupted and
        return them. A trial that another driver may still be running is left alone: one whose
        process on this machine is alive, or one started on another machine (this one cannot
        tell; its own driver recovers it when it resumes)."""
        stale = [r for r in self.records() if r.status == "running" and abandoned(self._drivers.get(r.id))]
        for r in stale:
            self.finish(r, "interrupted", None, "process ended while the trial was running")
        return stale

    # -- the in-memory records
    def _record(self, arm: str, t: FrozenTrial) -> TrialRecord | None:
        a = t.user_attrs
        if "order" not in a:
            return None
        fields = {k: a[k] for k in _RECORD_KEYS if k in a}
        if not t.state.is_finished():  # a finish cut short by a kill: not finished
            fields["status"] = "running"
        return TrialRecord(id=t._trial_id, arm=arm, params=a.get("params", dict(t.params)), **fields)

    def _refresh(self, signature: tuple) -> None:
        """Re-read what another writer may have changed: new trials and those running when last
        read (Optuna's cached storage fetches only these; a finished trial never changes)."""
        for arm, study in self.studies.items():
            for t in study.get_trials(deepcopy=False):
                known = self._by_id.get(t._trial_id)
                if known is not None and known.status != "running":
                    continue
                record = self._record(arm, t)
                if record is not None:
                    self._by_id[record.id] = record
                    self._drivers[record.id] = t.user_attrs.get("driver")
        self._ordered = sorted(self._by_id.values(), key=lambda r: (r.order, r.id))
        self._known = signature

    def _remember(self, record: TrialRecord, created: bool) -> None:
        """A record this store just wrote; the database's answer it now expects (unless another
        writer has changed something since, which the next records() then sees)."""
        self._by_id[record.id] = record
        for i in range(len(self._ordered) - 1, -1, -1):  # (a finished trial is one of the last)
            if self._ordered[i].id == record.id:
                self._ordered[i] = record
                break
        else:
            self._ordered.append(record)
            if len(self._ordered) > 1 and (self._ordered[-2].order, self._ordered[-2].id) > (record.order, record.id):
                self._ordered.sort(key=lambda r: (r.order, r.id))
        if self._known is not None:
            count, top, finished = self._known
            self._known = (count + 1, max(top or 0, record.id), finished) if created else (count, top, finished + 1)

    # -- the database
    def _signature(self) -> tuple:
        """(trials, largest trial id, finished trials) of this study: one aggregate query (without
        Optuna's models: every trial read through its public API)."""
        if not self.batched:
            trials = [t for s in self.studies.values() for t in s.get_trials(deepcopy=False)]
            return (len(trials), max((t._trial_id for t in trials), default=None),
                    sum(t.state != TrialState.RUNNING for t in trials))
        from optuna.storages._rdb import models
        from sqlalchemy import case, func, select

        t = models.TrialModel
        query = select(func.count(t.trial_id), func.max(t.trial_id),
                       func.coalesce(func.sum(case((t.state != TrialState.RUNNING, 1), else_=0)), 0)
                       ).where(t.study_id.in_(self._study_ids))
        with self.storage.engine.connect() as conn:
            count, top, finished = conn.execute(query).one()
        return int(count), top, int(finished)

    def _create(self, study_id: int, template) -> tuple[int, int]:
        """Insert a trial numbered `order` = trials of this study so far + 1, in one transaction
        that first takes the study's write lock (a no-op UPDATE of its first arm's row: a row
        lock on a database server, the write lock on SQLite), so concurrent drivers number
        their trials one after another. Returns (trial id, order)."""
        if not self.batched:
            order = 1 + sum(len(s.get_trials(deepcopy=False)) for s in self.studies.values())
            return self.storage.create_new_trial(study_id, template_trial=template(order)), order
        from optuna.distributions import distribution_to_json
        from optuna.storages._rdb import models
        from sqlalchemy import func, insert, select, update

        def create(session) -> tuple[int, int]:
            s, t = models.StudyModel, models.TrialModel
            session.execute(update(s).where(s.study_id == self._meta._study_id).values(study_name=s.study_name))
            order = 1 + session.execute(select(func.count(t.trial_id)).where(t.study_id.in_(self._study_ids))
                                        ).scalar_one()
            frozen = template(order)
            trial = t(study_id=study_id, number=None, state=TrialState.RUNNING, datetime_start=frozen.datetime_start)
            session.add(trial)
            session.flush()  # (its id)
            if frozen.params:
                session.execute(insert(models.TrialParamModel), [
                    dict(trial_id=trial.trial_id, param_name=k, param_value=d.to_internal_repr(frozen.params[k]),
                         distribution_json=distribution_to_json(d)) for k, d in frozen.distributions.items()])
            session.execute(insert(models.TrialUserAttributeModel), [
                dict(trial_id=trial.trial_id, key=k, value_json=json.dumps(v)) for k, v in frozen.user_attrs.items()])
            trial.number = trial.count_past_trials(session)
            return trial.trial_id, order

        return self._transaction(create)

    def _close(self, trial_id: int, attrs: dict[str, Any], state: TrialState, value: float | None,
               intermediate: dict[int, float] | None = None) -> None:
        """Write a finished trial's attributes, value, intermediate values and state in one transaction."""
        if not self.batched:  # one write each, the state last: until then the trial reads as running
            for k, v in attrs.items():
                self.storage.set_trial_user_attr(trial_id, k, v)
            for step, loss in (intermediate or {}).items():
                self.storage.set_trial_intermediate_value(trial_id, step, loss)
            self.storage.set_trial_state_values(trial_id, state, None if value is None else [value])
            return
        from optuna.storages._rdb import models
        from sqlalchemy import delete, insert

        def close(session) -> None:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            self.storage.check_trial_is_updatable(trial_id, trial.state)
            a = models.TrialUserAttributeModel
            session.execute(delete(a).where(a.trial_id == trial_id, a.key.in_(list(attrs))))
            session.execute(insert(a), [dict(trial_id=trial_id, key=k, value_json=json.dumps(v))
                                        for k, v in attrs.items()])
            iv = models.TrialIntermediateValueModel
            for step, loss in (intermediate or {}).items():
                stored_iv, kind_iv = iv.intermediate_value_to_stored_repr(loss)
                session.add(iv(trial_id=trial_id, step=step, intermediate_value=stored_iv,
                               intermediate_value_type=kind_iv))
            if value is not None:
                stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                session.add(models.TrialValueModel(trial_id=trial_id, objective=0, value=stored, value_type=kind))
            trial.state = state
            trial.datetime_complete = datetime.now()

        self._transaction(close)

    def _transaction(self, work):
        """work(session) in one transaction, committed before this returns; retried a few times
        when the database is busy (another driver holds its lock), as Optuna does."""
        from optuna.storages._rdb.storage import _create_scoped_session

        for attempt in range(1, TRANSACTION_TRIES + 1):
            try:
                with _create_scoped_session(self.storage.scoped_session) as session:
                    return work(session)
            except optuna.exceptions.StorageInternalError as err:
                if attempt == TRANSACTION_TRIES or not _BUSY.search(_one_line(err)):
                    raise
                time.sleep(random.uniform(0.05, 0.5) * attempt)

    # -- study-level metadata (JSON values)
    def get_meta(self, key: str, default: Any = None) -> Any:
        raw = self._meta.user_attrs.get(f"{STUDY_META}.{key}")
        return default if raw is None else json.loads(raw)

    def set_meta(self, key: str, value: Any) -> None:
        self.storage.set_study_user_attr(self._meta._study_id, f"{STUDY_META}.{key}", json.dumps(value))
