"""Trials answered from a table of real results: a whole study in seconds, through the real loop.

`--executor replay:TABLE` (TABLE: a CSV of benchmarks/make_replay_table.py) answers each trial
with the table's nearest configuration of the same optimizer and one of its seeds, chosen by
(the executor's seed, the trial's seed): the same trial seed maps to the same table seed for every
configuration, so replicates and confirmations stay paired, and consecutive trial seeds map to
distinct table seeds while the table has enough. It writes a real metrics.json (history at
25/50/75/100% of training), so reports, plots and claims work as usual. Use it to iterate on
planning policy; its numbers are the table's, not new measurements. With `pace` > 0 a trial also
takes its recorded training time times `pace` (a study's parallel schedule, with several workers,
in a fraction of its real time).

Early stops: a spec with `stop_above` (step -> the most val loss allowed there) is stopped at the
first recorded eval above its limit, by the trainer's own rule (TrialSpec.stop_reason), from the
table's curve columns loss_25/50/75: status "stopped", history and metrics up to that eval.

Which knobs, and how far: the table's header names its knobs (every column that is not a result:
dotted TrialSpec fields such as `lr`, `adamw_lr`, `momentum_schedule.kind`); the study's space
says which of them each optimizer searches and on what scale. The distance from a trial to a
table configuration sums, over the searched knobs, the squared number of the space's grid steps
between them (`Param.steps_between`: log scale where the space is log, linear elsewhere) and 1 per
mismatched choice. A knob left blank on either side (a conditional knob that is off) adds nothing,
and so does a knob the table holds at one value for that optimizer (it cannot choose between
rows). A study knob the table has no column for, or (unless conditional) no values for, is an error. Without a study, the default study
(experiments/muon_vs_adamw.toml) says which knobs count.
"""

from __future__ import annotations

import csv
import math
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from research_agents.config import Param, Study, load_study
from research_agents.execution.base import BaseExecutor, Outcome, ProgressFn
from research_agents.records import TrialMetrics
from trainer.metrics import FinalMetrics, write_metrics
from trainer.spec import TrialSpec

CURVE = (25, 50, 75, 100)  # percent of training with a recorded val loss (loss_25 ... loss_100)
# every column that is not a knob: the optimizer ("arm", matched to spec.optimizer) and the results
RESULT_COLUMNS = ("arm", "seed", "status", "val_loss", "val_accuracy", "train_loss",
                  *(f"loss_{q}" for q in CURVE), "diverged_step", "wall_time_s")
DEFAULT_STUDY = Path(__file__).resolve().parents[2] / "experiments" / "muon_vs_adamw.toml"


@dataclass(frozen=True)
class Row:
    arm: str
    config: tuple[tuple[str, str], ...]  # (knob column, its text in the table; "" when blank)
    seed: int
    status: str
    val_loss: float | None
    val_accuracy: float | None
    train_loss: float | None
    curve: tuple[tuple[int, float], ...]
    wall_time_s: float

    def value(self, knob: str) -> str:
        return dict(self.config).get(knob, "")


def _f(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def load_table(path: Path) -> dict[tuple, list[Row]]:
    """{(arm, *the knob columns' texts): [rows by seed]} (ValueError on a bad table)."""
    try:
        with Path(path).open() as fh:
            reader = csv.DictReader(fh)
            raw = list(reader)
            header = list(reader.fieldnames or [])
    except OSError as err:
        raise ValueError(f"--executor replay: cannot read {path}: {err.strerror}") from None
    missing = [c for c in RESULT_COLUMNS if c not in header and c != "diverged_step"]
    if missing:
        raise ValueError(f"--executor replay: {path} is not a replay table (no column {missing[0]!r})")
    knobs = [c for c in header if c not in RESULT_COLUMNS]
    table: dict[tuple, list[Row]] = {}
    for i, r in enumerate(raw, 2):
        try:
            curve = tuple((q, float(r[f"loss_{q}"])) for q in CURVE if r.get(f"loss_{q}"))
            config = tuple((k, (r[k] or "").strip()) for k in knobs)
            row = Row(arm=r["arm"], config=config, seed=int(r["seed"]), status=r["status"],
                      val_loss=_f(r["val_loss"]), val_accuracy=_f(r["val_accuracy"]), train_loss=_f(r["train_loss"]),
                      curve=curve, wall_time_s=_f(r["wall_time_s"]) or 0.0)
        except (KeyError, ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"--executor replay: {path} line {i} is not a replay row ({err})") from None
        table.setdefault((row.arm, *(v for _, v in config)), []).append(row)
    if not table:
        raise ValueError(f"--executor replay: {path} holds no rows")
    for rows in table.values():
        rows.sort(key=lambda r: r.seed)
    return table


def study_knobs(study: Study) -> dict[str, dict[str, Param]]:
    """{optimizer: {knob: its Param}}: every searched knob of the study's arms, by the arm's optimizer."""
    out: dict[str, dict[str, Param]] = {}
    for name, arm in study.arms.items():
        optimizer = study.trial_spec(name, {}, seed=0).optimizer
        for key, param in arm.space.items():
            out.setdefault(optimizer, {}).setdefault(key, param)
    return out


def _dotted(tree: dict, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class Distance:
    """The distance from trials of one optimizer to the table's configurations of that optimizer."""

    def __init__(self, path: Path, optimizer: str, knobs: dict[str, Param], rows: list[Row], study: str):
        header = {k for k, _ in rows[0].config}
        self.knobs: dict[str, Param] = {}
        for key, param in knobs.items():
            values = {r.value(key) for r in rows} - {""}
            if key not in header or (not values and not param.when):  # a conditional knob may be off throughout
                raise ValueError(f"--executor replay: {path.name} has no values of {optimizer}'s knob {key!r}, "
                                 f"which study {study} searches")
            if param.type != "choice":
                try:
                    numbers = {float(v) for v in values}
                except ValueError:
                    raise ValueError(f"--executor replay: {path.name} column {key!r} holds a non-number "
                                     f"for {optimizer}") from None
                if param.log and min(numbers) <= 0:
                    raise ValueError(f"--executor replay: {path.name} column {key!r} needs values > 0 "
                                     f"(log scale in study {study})")
            if len(values) > 1:  # a knob held at one value cannot choose between rows
                self.knobs[key] = param

    def distance(self, spec: dict, config: tuple) -> float:
        row = dict(config)
        d = 0.0
        for key, param in self.knobs.items():
            mine, theirs = _dotted(spec, key), row.get(key, "")
            if mine is None or theirs == "":
                continue
            if param.type == "choice":
                d += 0.0 if str(mine) == theirs else 1.0
            else:
                d += param.steps_between(float(theirs), float(mine)) ** 2
        return d


class ReplayExecutor(BaseExecutor):
    name = "replay"
    trains_locally = False  # answers from the table: no data to prepare, no device

    def __init__(self, table: str | Path, seed: int = 0, pace: float = 0.0, study: Study | None = None):
        self.path = Path(table)
        self.table = load_table(self.path)
        study = study if study is not None else load_study(DEFAULT_STUDY)
        self.distances = {
            optimizer: Distance(self.path, optimizer, knobs,
                              [r for k, rows in self.table.items() if k[0] == optimizer for r in rows], study.name)
            for optimizer, knobs in study_knobs(study).items()
            if any(k[0] == optimizer for k in self.table)  # an optimizer the table lacks fails its trials
        }
        self.seed = seed
        self.order = seed_order(self.table, seed)
        self.pace = pace  # wall seconds per recorded training second (0: answer at once)
        self.worth_speculating = pace > 0
        self._stops: dict[Path, threading.Event] = {}  # paced trials running: run_dir -> stop
        self._lock = threading.Lock()

    def cancel(self, run_dir: Path | None = None) -> None:
        with self._lock:
            if run_dir is not None and run_dir not in self._stops:
                self._stops[run_dir] = threading.Event()  # cancelled before it started waiting
            for d, stop in self._stops.items():
                if run_dir is None or d == run_dir:
                    stop.set()

    def _wait(self, run_dir: Path, seconds: float) -> bool:
        """Take `seconds` (paced); False when cancelled first."""
        with self._lock:
            stop = self._stops.setdefault(run_dir, threading.Event())
        try:
            return not stop.wait(seconds)
        finally:
            with self._lock:
                self._stops.pop(run_dir, None)

    def describe(self) -> str:
        return f"replay of {self.path.name} ({sum(map(len, self.table.values()))} real runs)"

    def nearest(self, spec: TrialSpec) -> tuple:
        keys = [k for k in self.table if k[0] == spec.optimizer]
        if not keys:
            raise ValueError(f"the replay table has no {spec.optimizer} runs")
        metric = self.distances.get(spec.optimizer)
        if metric is None:  # no arm of the study searches this optimizer: any configuration is as near
            return keys[0]
        dump = spec.model_dump(mode="json")
        return min(keys, key=lambda k: metric.distance(dump, self.table[k][0].config))

    def seed_assignment(self) -> tuple[int, ...]:
        """The table seeds that answer the loop's seed indices 0, 1, 2, ... (seed_order): executors
        with the same tuple answer every trial alike."""
        return self.order

    def row(self, spec: TrialSpec) -> Row:
        """The table row that answers `spec`: its nearest config, at the table seed this executor's
        order gives the spec's seed index (search seeds 0, 1, ... are indices 0, 1, ...; confirmation
        seeds 1000, 1001, ... start at index 3), among the seeds that config has."""
        rows = self.table[self.nearest(spec)]
        by_seed = {r.seed: r for r in rows}
        seeds = [s for s in self.order if s in by_seed]
        return by_seed[seeds[(spec.seed % 1000 + 3 * (spec.seed // 1000)) % len(seeds)]]

    def run(self, spec: TrialSpec, run_dir: Path, timeout_s: float,
            on_progress: ProgressFn | None = None) -> Outcome:
        started = time.perf_counter()
        try:
            row = self.row(spec)
        except ValueError as err:
            return Outcome(status="failed", metrics=None, reason=str(err), log_path=None,
                           wall_time_s=time.perf_counter() - started)
        if self.pace > 0 and not self._wait(run_dir, row.wall_time_s * self.pace):
            return Outcome(status="failed", metrics=None, reason="cancelled", log_path=None,
                           wall_time_s=time.perf_counter() - started)
        steps = spec.steps
        history = [{"step": math.ceil(steps * q / 100), "val_loss": v, "train_loss": v,
                    "lr": spec.lr, "time_s": row.wall_time_s * q / 100} for q, v in row.curve]
        status = "diverged" if row.status == "diverged" else "completed"
        stop = _stop(spec, row.curve)
        if stop is not None:  # the spec's early stop, decided from the table's curve as training decides
            at, why = stop
            history = history[: at + 1]
            last = history[-1]
            last["step"] = spec.eval_step_by(row.curve[at][0])  # where the trainer would have stopped
            metrics = TrialMetrics(
                spec=spec.model_dump(mode="json"), status="stopped", reason=why,
                final=FinalMetrics(val_loss=last["val_loss"], val_perplexity=math.exp(min(last["val_loss"], 20.0)),
                                   train_loss=last["train_loss"]),
                history=history, optimizer_steps=last["step"], tokens_seen=last["step"] * spec.tokens_per_step,
                wall_time_s=last["time_s"], device="replay", precision="replay",
                env={"replay": {"table": self.path.name, **{k: v for k, v in row.config if v != ""},
                                "seed": row.seed}})
            write_metrics(Path(run_dir), metrics)
            return Outcome(status="stopped", metrics=metrics, reason=why, log_path=None,
                           wall_time_s=time.perf_counter() - started)
        if status == "completed" and (row.val_loss is None or not math.isfinite(row.val_loss)):
            return Outcome(status="diverged" if row.val_loss is not None else "failed", metrics=None,
                           reason=f"the replay table's row has no finite val_loss ({row.val_loss})", log_path=None,
                           wall_time_s=time.perf_counter() - started)
        metrics = TrialMetrics(
            spec=spec.model_dump(mode="json"), status=status,
            reason=f"replayed from {self.path.name} (seed {row.seed})" if status == "completed" else "diverged (replayed)",
            final=FinalMetrics(val_loss=row.val_loss, val_accuracy=row.val_accuracy,
                               val_perplexity=math.exp(min(row.val_loss, 20.0)) if row.val_loss is not None else None,
                               train_loss=row.train_loss),
            history=history, optimizer_steps=steps, tokens_seen=steps * spec.tokens_per_step,
            wall_time_s=row.wall_time_s, device="replay", precision="replay",
            env={"replay": {"table": self.path.name, **{k: v for k, v in row.config if v != ""},
                            "seed": row.seed}})
        write_metrics(Path(run_dir), metrics)
        return Outcome(status=status, metrics=metrics, reason=None if status == "completed" else metrics.reason,
                       log_path=None, wall_time_s=time.perf_counter() - started)


def seed_order(table: dict[tuple, list[Row]], seed: int) -> tuple[int, ...]:
    """Which table seed stands for each of the loop's seed indices, drawn from `seed`: first the seeds
    every config has (in an order drawn from `seed`), then the rest (another draw). A loop seed is one
    initialisation and data order for every config, and the table's runs share theirs the same way (on
    benchmarks/data/replay_fair.csv two AdamW configs' seed residuals correlate 0.63), so every config
    answers a seed index from the same table seed wherever it has that seed; only a config's extra
    seeds (near an optimum) go beyond the common ones."""
    rng = random.Random(seed)
    seeds = [{r.seed for r in rows} for rows in table.values()]
    common = sorted(set.intersection(*seeds))
    rest = sorted(set.union(*seeds) - set(common))
    return tuple(rng.sample(common, len(common)) + rng.sample(rest, len(rest)))


def _stop(spec: TrialSpec, curve: tuple[tuple[int, float], ...]) -> tuple[int, str] | None:
    """(index in `curve`, why) of the first recorded val loss at which `spec.stop_above` stops the
    run, or None: loss_Q is the eval at the last eval step by Q% of the steps (as a curve summary
    reads it), judged by TrialSpec.stop_reason, the rule the trainer applies after each eval."""
    for i, (q, loss) in enumerate(curve):
        step = spec.eval_step_by(q)
        why = spec.stop_reason(step, loss) if step is not None else None
        if why is not None:
            return i, why
    return None


__all__ = ["ReplayExecutor", "load_table", "Row", "RESULT_COLUMNS", "study_knobs"]
