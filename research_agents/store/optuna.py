"""The default store: Optuna's RDB storage.

The backend is Optuna's RDB storage (SQLite file in the run directory, or any SQLAlchemy
URL), one Optuna study per arm, so optuna-dashboard can open a study. A trial is written as
RUNNING before it trains and finished the moment it ends; a trial still RUNNING when a new
process opens the store was killed, and `recover()` hands it back for a re-run.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from research_agents.config.space import Param
from research_agents.records import TrialRecord, result_fields
from research_agents.store.base import BaseStore

STUDY_META = "research_agents"


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

    def __init__(self, url: str, study_name: str, arms: dict[str, dict[str, Param]]):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url = url
        self.storage = optuna.storages.RDBStorage(url, heartbeat_interval=None)
        self.spaces = arms
        self.studies = {
            arm: optuna.create_study(storage=self.storage, study_name=f"{study_name}:{arm}",
                                     direction="minimize", load_if_exists=True)
            for arm in arms
        }
        self._meta = self.studies[next(iter(arms))]

    @classmethod
    def for_dir(cls, out: Path, study_name: str, arms: dict[str, dict[str, Param]],
                url: str | None = None) -> OptunaStore:
        out.mkdir(parents=True, exist_ok=True)
        return cls(url or f"sqlite:///{(out / 'study.db').resolve()}", study_name, arms)

    @classmethod
    def for_study(cls, out: Path, study, url: str | None = None) -> OptunaStore:
        """The store of `study` in run directory `out` (one Optuna study per arm)."""
        return cls.for_dir(out, study.name, {a: arm.space for a, arm in study.arms.items()}, url=url)

    # -- trials
    def start(self, arm, params, seed, origin, phase, round, rationale, run_dir) -> TrialRecord:
        study = self.studies[arm]
        fixed = searchable(self.spaces[arm], params)
        study.enqueue_trial(fixed, skip_if_exists=False)
        trial = study.ask(distributions(self.spaces[arm], fixed))
        trial.set_user_attr("params", params)
        order = sum(len(s.get_trials(deepcopy=False)) for s in self.studies.values())
        attrs = dict(seed=seed, origin=origin, phase=phase, round=round, rationale=rationale,
                     run_dir=run_dir, order=order, status="running",
                     started=datetime.now(timezone.utc).isoformat())
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        return TrialRecord(id=trial._trial_id, arm=arm, params=params, **attrs)

    def finish(self, record, status, metrics, reason) -> TrialRecord:
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
                out.append(TrialRecord(id=t._trial_id, arm=arm, params=a.get("params", dict(t.params)),
                                       **{k: a[k] for k in keys if k in a}))
        return sorted(out, key=lambda r: r.order)

    # -- study-level metadata (JSON values)
    def get_meta(self, key: str, default: Any = None) -> Any:
        raw = self._meta.user_attrs.get(f"{STUDY_META}.{key}")
        return default if raw is None else json.loads(raw)

    def set_meta(self, key: str, value: Any) -> None:
        self.storage.set_study_user_attr(self._meta._study_id, f"{STUDY_META}.{key}", json.dumps(value))
