"""What a tracking backend is told, and the fan-out that keeps a failing backend from failing a run.

A backend subclasses `Tracker` and overrides the hooks it needs (each a no-op here): the run's
start, a trial's start, progress and end (its curves and final metrics), a round's end, and the
study's summary (ranking, verdict, tuning evidence, key plots) once the final report is written.
`Tracking` calls every backend in turn; one that raises is recorded (`on_error`: the store's meta
and the console) and dropped for the rest of the run, never failing a trial or the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from research_agents.records import HistoryPoint, TrialMetrics, TrialRecord
from trainer.checkpoint import CHECKPOINT_FILE, MODEL_FILE

TRACKING_DIR = "tracking"  # OUT/tracking/<backend>: every backend's local files
# what a trial keeps with --save-model: its trained model and its last checkpoint, the files a
# backend may upload
MODEL_FILES = (MODEL_FILE, CHECKPOINT_FILE)


@dataclass(frozen=True)
class Trial:
    """One trial as every backend names and groups it: `name` (its directory's name), the study and
    the arm it belongs to, its parameters and record fields, its curve and its final metrics."""

    name: str
    study: str
    arm: str
    params: dict[str, Any]
    info: dict[str, Any]  # id, order, seed, origin, phase, round, status
    final: dict[str, float]  # val_loss, val_accuracy, ... (finite values only)
    curve: list[dict[str, float]]  # per logged step: step and every finite number logged there
    files: dict[str, Path] = field(default_factory=dict)  # the kept model files (MODEL_FILES) that exist

    @classmethod
    def of(cls, study: str, record: TrialRecord, metrics: TrialMetrics | None = None,
           out: Path | None = None) -> Trial:
        name = Path(record.run_dir).name if record.run_dir else f"trial-{record.order:04d}"
        run_dir = Path(out) / record.run_dir if out is not None and record.run_dir else None
        files = {f: run_dir / f for f in MODEL_FILES if run_dir is not None and (run_dir / f).is_file()}
        final = {k: v for k in ("val_loss", "val_accuracy", "val_perplexity", "train_loss", "wall_time_s")
                 if (v := _number(getattr(record, k))) is not None}
        curve = [point for h in (metrics.history if metrics is not None else []) if (point := _point(h))]
        info = {"id": record.id, "order": record.order, "seed": record.seed, "origin": record.origin,
                "phase": record.phase, "round": record.round, "status": record.status}
        return cls(name, study, record.arm, dict(record.params), info, final, curve, files)


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _point(h: HistoryPoint) -> dict[str, float]:
    point = {k: n for k, v in h.model_dump().items() if (n := _number(v)) is not None}
    return point if "step" in point else {}


@dataclass(frozen=True)
class Summary:
    """The study's summary as the final report computed it (OUT/summary.json): the ranking rows,
    the verdict and its confidence, the tuning evidence rows and the key plots (title -> path)."""

    study: str
    question: str
    verdict: str
    confidence: str
    ranking: list[dict[str, Any]]  # rank, arm, config, params, n, mean val loss, sd
    tuning: list[dict[str, Any]]  # arm, knob, status, leader value, evidence
    plots: dict[str, Path]
    recommendation: dict[str, Any] = field(default_factory=dict)

    RANKING_COLUMNS = ("rank", "arm", "config", "params", "n", "mean_val_loss", "sd")
    TUNING_COLUMNS = ("arm", "knob", "status", "leader_value", "evidence")

    @classmethod
    def read(cls, out: Path) -> Summary:
        data = json.loads((Path(out) / "summary.json").read_text())
        ranking = []
        for c in data.get("configs", []):
            s = c.get("confirm_summary") or c.get("summary") or {}
            ranking.append({"rank": c.get("rank"), "arm": c.get("arm"), "config": c.get("config"),
                            "params": json.dumps(c.get("params", {}), sort_keys=True), "n": s.get("n"),
                            "mean_val_loss": s.get("mean"), "sd": s.get("sd")})
        tuning = [{"arm": arm, "knob": k.get("knob"), "status": k.get("status"),
                   "leader_value": json.dumps(k.get("leader_value")), "evidence": k.get("text", "")}
                  for arm, ev in (data.get("tuning") or {}).items() for k in ev.get("knobs", [])]
        plots = {title: Path(out) / rel for title, rel in (data.get("plots") or {}).items()
                 if (Path(out) / rel).is_file()}
        if (Path(out) / "comparison_plot.png").is_file():
            plots["Comparison"] = Path(out) / "comparison_plot.png"
        rec = data.get("recommendation") or {}
        return cls(data.get("study", ""), data.get("question", ""), rec.get("text", ""), rec.get("confidence", ""),
                   ranking, tuning, plots, rec)

    def rows(self, which: str) -> tuple[tuple[str, ...], list[list[Any]]]:
        """(columns, rows) of the ranking or the tuning evidence table."""
        cols = self.RANKING_COLUMNS if which == "ranking" else self.TUNING_COLUMNS
        return cols, [[row.get(c) for c in cols] for row in (self.ranking if which == "ranking" else self.tuning)]

    def markdown(self, which: str) -> str:
        cols, rows = self.rows(which)
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join("" if v is None else str(v).replace("|", "/") for v in r) + " |" for r in rows]
        return "\n".join(lines)


class Tracker:
    """A tracking backend: every hook is a no-op unless the backend overrides it."""

    name = "base"

    def trial_start(self, record: TrialRecord) -> None:
        """A trial began training."""

    def progress(self, record: TrialRecord, entry: dict) -> None:
        """A running trial's logged step (called from the worker thread that waits on it)."""

    def trial_end(self, trial: Trial) -> None:
        """A trial finished (any status): its curve and final metrics."""

    def round_end(self, round_no: int, trials: list[Trial]) -> None:
        """A round's trials are all finished and its report written."""

    def summary(self, summary: Summary) -> None:
        """The study's ranking, verdict, tuning evidence and key plots (after the final report)."""

    def close(self) -> None:
        """The run ends: flush and release whatever the backend holds."""


@dataclass
class Tracking:
    """Every chosen backend, each call guarded: a backend that raises is reported through
    `on_error(backend, hook, message)` and not called again in this run."""

    study: str
    out: Path
    trackers: list[Tracker]
    on_error: Callable[[str, str, str], None] = lambda b, h, m: None
    failed: dict[str, str] = field(default_factory=dict)

    _late: list[tuple[Tracker, str, str]] = field(default_factory=list)  # progress failures, not yet reported

    def _each(self, hook: str, *args: Any) -> None:
        self._report_late()
        for t in list(self.trackers):
            try:
                getattr(t, hook)(*args)
            except Exception as e:  # noqa: BLE001 - a tracking backend never fails a trial or the run
                self._failed(t, hook, " ".join(f"{type(e).__name__}: {e}".split())[:400])

    def _failed(self, t: Tracker, hook: str, message: str) -> None:
        self.failed[t.name] = f"{hook}: {message}"
        if t in self.trackers:
            self.trackers.remove(t)
        self.on_error(t.name, hook, message)
        try:
            t.close()
        except Exception:  # noqa: BLE001, S110 - it already failed and was recorded
            pass

    def _report_late(self) -> None:
        while self._late:
            self._failed(*self._late.pop(0))

    def trial_start(self, record: TrialRecord) -> None:
        self._each("trial_start", record)

    def progress(self, record: TrialRecord, entry: dict) -> None:
        """From a worker thread: a failure here is reported by the driver's next call (on_error
        writes the store, which only the driver thread does)."""
        for t in list(self.trackers):
            if any(f is t for f, _, _ in self._late):
                continue
            try:
                t.progress(record, entry)
            except Exception as e:  # noqa: BLE001 - never fails the trial
                self._late.append((t, "progress", " ".join(f"{type(e).__name__}: {e}".split())[:400]))

    def trial(self, record: TrialRecord) -> Trial:
        return Trial.of(self.study, record, record.metrics(self.out), self.out)

    def trial_end(self, record: TrialRecord) -> None:
        if self.trackers:
            self._each("trial_end", self.trial(record))

    def round_end(self, round_no: int, records: list[TrialRecord]) -> None:
        if self.trackers:
            self._each("round_end", round_no, [self.trial(r) for r in records])

    def summary(self) -> None:
        if self.trackers:
            try:
                summary = Summary.read(self.out)
            except (OSError, ValueError) as e:  # no summary.json: nothing to summarise
                self.on_error("tracking", "summary", f"summary.json unreadable: {e}")
                return
            self._each("summary", summary)

    def close(self) -> None:
        self._each("close")
        self._report_late()


__all__ = ["MODEL_FILES", "TRACKING_DIR", "Summary", "Trial", "Tracker", "Tracking"]
