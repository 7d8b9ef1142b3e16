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
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from research_agents.config.space import Param
from research_agents.records import TrialRecord, result_fields
from research_agents.store.base import BaseStore, StoreError

STUDY_META = "research_agents"
DB_FILE = "study.db"  # the default store: OUT/study.db
CONNECT_TIMEOUT_S = 10  # for database servers: an unreachable host fails in seconds, not minutes


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
    return str(path) if path is not None else _parse(url).render_as_string(hide_password=True)


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


class OptunaStore(BaseStore):
    """Store on optuna.storages.RDBStorage: `sqlite:///OUT/study.db` unless a URL is given."""

    def __init__(self, url: str, study_name: str, arms: dict[str, dict[str, Param]], readonly: bool = False):
        """Open (readonly: only open, never create) the store; StoreError with one line when the
        database is missing, damaged, unreachable or lacks the study."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url = url
        self.readonly = readonly
        self.spaces = arms
        where = describe(url)
        path = sqlite_path(url)
        if readonly and path is not None and not path.is_file():
            raise StoreError(f"{where} does not exist")
        self._snapshot = None
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
        self.storage = optuna.storages.RDBStorage(url, heartbeat_interval=None, skip_table_creation=self.readonly)
        self.studies = {arm: self._study(f"{study_name}:{arm}") for arm in self.spaces}
        self._meta = self.studies[next(iter(self.spaces))]
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
    def start(self, arm, params, seed, origin, phase, round, rationale, run_dir) -> TrialRecord:
        """One transaction: a process killed at any point leaves either no trial or a whole one."""
        study = self.studies[arm]
        fixed = searchable(self.spaces[arm], params)
        order = 1 + sum(len(s.get_trials(deepcopy=False)) for s in self.studies.values())  # (cached reads)
        attrs = dict(seed=seed, origin=origin, phase=phase, round=round, rationale=rationale,
                     run_dir=run_dir, order=order, status="running",
                     started=datetime.now(timezone.utc).isoformat())
        template = FrozenTrial(number=0, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                               datetime_complete=None, params=fixed,
                               distributions=distributions(self.spaces[arm], fixed),
                               user_attrs={"params": params, **attrs}, system_attrs={}, intermediate_values={},
                               trial_id=0)
        trial_id = self.storage.create_new_trial(study._study_id, template_trial=template)
        return TrialRecord(id=trial_id, arm=arm, params=params, **attrs)

    def finish(self, record, status, metrics, reason) -> TrialRecord:
        """The result fields first, the Optuna state last: until the state is written the trial
        reads as running, so a process killed half-way through leaves a trial to re-run."""
        fields = result_fields(status, metrics, reason)
        for k, v in fields.items():
            self.storage.set_trial_user_attr(record.id, k, v)
        self.storage.set_trial_user_attr(record.id, "finished", datetime.now(timezone.utc).isoformat())
        done = status == "completed" and fields["val_loss"] is not None
        self.storage.set_trial_state_values(
            record.id, TrialState.COMPLETE if done else TrialState.FAIL,
            [fields["val_loss"]] if done else None,
        )
        return record.model_copy(update=fields)

    def records(self) -> list[TrialRecord]:
        out = []
        for arm, study in self.studies.items():
            for t in study.get_trials(deepcopy=False):
                a = t.user_attrs
                if "order" not in a:
                    continue
                keys = set(TrialRecord.model_fields) - {"id", "arm", "params"}
                fields = {k: a[k] for k in keys if k in a}
                if not t.state.is_finished():  # a finish cut short by a kill: not finished
                    fields["status"] = "running"
                out.append(TrialRecord(id=t._trial_id, arm=arm, params=a.get("params", dict(t.params)), **fields))
        return sorted(out, key=lambda r: r.order)

    # -- study-level metadata (JSON values)
    def get_meta(self, key: str, default: Any = None) -> Any:
        raw = self._meta.user_attrs.get(f"{STUDY_META}.{key}")
        return default if raw is None else json.loads(raw)

    def set_meta(self, key: str, value: Any) -> None:
        self.storage.set_study_user_attr(self._meta._study_id, f"{STUDY_META}.{key}", json.dumps(value))
