"""Trials answered from a table of real results: a whole study in seconds, through the real loop.

`--executor replay:TABLE` (TABLE: a CSV of benchmarks/make_replay_table.py) answers each trial
with the table's nearest configuration of the same optimizer (distance in grid steps: LR on a
log scale, momentum, Newton-Schulz steps, the momentum schedule's kind) and one of its seeds,
chosen by (the executor's seed, the trial's seed): the same trial seed maps to the same table
seed for every configuration, so replicates and confirmations stay paired, and consecutive
trial seeds map to distinct table seeds while the table has enough. It writes a real
metrics.json (history at 25/50/75/100% of training), so reports, plots and claims work as usual.
Use it to iterate on planning policy; its numbers are the table's, not new measurements.
With `pace` > 0 a trial also takes its recorded training time times `pace` (a study's parallel
schedule, with several workers, in a fraction of its real time).
"""

from __future__ import annotations

import csv
import math
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from research_agents.execution.base import BaseExecutor, Outcome, ProgressFn
from research_agents.records import TrialMetrics
from trainer.metrics import FinalMetrics, write_metrics
from trainer.spec import TrialSpec

# grid spacing of each knob in the table, the unit of distance
SCALES = {"lr": math.log(2.0), "momentum": 0.075, "ns_steps": 2.0}


@dataclass(frozen=True)
class Row:
    arm: str
    lr: float
    momentum: float | None
    ns_steps: int | None
    kind: str | None
    seed: int
    status: str
    val_loss: float | None
    val_accuracy: float | None
    train_loss: float | None
    curve: tuple[tuple[int, float], ...]
    wall_time_s: float


def _f(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def load_table(path: Path) -> dict[tuple, list[Row]]:
    """{(arm, lr, momentum, ns_steps, kind): [rows by seed]} (ValueError on a bad table)."""
    try:
        with Path(path).open() as fh:
            raw = list(csv.DictReader(fh))
    except OSError as err:
        raise ValueError(f"--executor replay: cannot read {path}: {err.strerror}") from None
    table: dict[tuple, list[Row]] = {}
    for i, r in enumerate(raw, 2):
        try:
            curve = tuple((q, float(r[f"loss_{q}"])) for q in (25, 50, 75, 100) if r.get(f"loss_{q}"))
            row = Row(arm=r["arm"], lr=float(r["lr"]), momentum=_f(r["momentum"]),
                      ns_steps=int(r["ns_steps"]) if r["ns_steps"] else None,
                      kind=r["momentum_schedule.kind"] or None, seed=int(r["seed"]), status=r["status"],
                      val_loss=_f(r["val_loss"]), val_accuracy=_f(r["val_accuracy"]), train_loss=_f(r["train_loss"]),
                      curve=curve, wall_time_s=_f(r["wall_time_s"]) or 0.0)
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"--executor replay: {path} line {i} is not a replay row ({err})") from None
        table.setdefault((row.arm, row.lr, row.momentum, row.ns_steps, row.kind), []).append(row)
    if not table:
        raise ValueError(f"--executor replay: {path} holds no rows")
    for rows in table.values():
        rows.sort(key=lambda r: r.seed)
    return table


def _distance(spec: TrialSpec, key: tuple) -> float:
    _, lr, momentum, ns_steps, kind = key
    d = (math.log(spec.lr / lr) / SCALES["lr"]) ** 2
    if momentum is not None:
        d += ((spec.momentum - momentum) / SCALES["momentum"]) ** 2
    if ns_steps is not None:
        d += ((spec.ns_steps - ns_steps) / SCALES["ns_steps"]) ** 2
    if kind is not None and spec.momentum_schedule.kind != kind:
        d += 1.0
    return d


class ReplayExecutor(BaseExecutor):
    name = "replay"
    trains_locally = False  # answers from the table: no data to prepare, no device

    def __init__(self, table: str | Path, seed: int = 0, pace: float = 0.0):
        self.path = Path(table)
        self.table = load_table(self.path)
        self.seed = seed
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
        return min(keys, key=lambda k: _distance(spec, k))

    def row(self, spec: TrialSpec) -> Row:
        """The table row that answers `spec`: its nearest config, the seed (self.seed, spec.seed) picks."""
        rows = self.table[self.nearest(spec)]
        # consecutive trial seeds take consecutive table seeds (distinct while the table has them),
        # from an offset of the executor's seed; confirmation seeds (1000+) start elsewhere
        base = random.Random(self.seed).randrange(len(rows))
        return rows[(base + spec.seed % 1000 + 3 * (spec.seed // 1000)) % len(rows)]

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
            env={"replay": {"table": self.path.name, "lr": row.lr, "momentum": row.momentum,
                            "ns_steps": row.ns_steps, "kind": row.kind, "seed": row.seed}})
        write_metrics(Path(run_dir), metrics)
        return Outcome(status=status, metrics=metrics, reason=None if status == "completed" else metrics.reason,
                       log_path=None, wall_time_s=time.perf_counter() - started)


__all__ = ["ReplayExecutor", "load_table", "Row"]
