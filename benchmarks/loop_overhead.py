"""What does the loop itself cost per trial, and does that stay flat as a study grows?

    python -m benchmarks.loop_overhead [--trials 2000] [--planner random] [--window 20]
                                       [--at 20 100 500 1000 2000] [--json PATH]
    python -m benchmarks.loop_overhead --real [--budget 20] [--workers N] [--json PATH]

Replay (the default): the real `run` command (research_agents.cli.main, in this process) on the
default study (experiments/muon_vs_adamw.toml) with the replay executor
(`replay:benchmarks/data/replay_fair.csv`), so every trial goes through the real planner, store,
round reports, trial plots and console, only the training is answered from the table. Each
trial's cost is the time from the end of the previous trial (its store.finish returning) to the
end of this one, minus the replayed trial itself: planning, the store, the reports, the plots.
It prints that cost (ms per trial, mean over the `--window` trials ending at each `--at` count),
split by where it went (store, planner, round report, trial plot, the rest), and the database
commits per trial (SQLAlchemy "commit" events; SQLite: one fsync'd transaction each). The final
report at the end is timed on its own.

Real (`--real`): the `run` command in a subprocess on the default study with real training
(budget 20), once with one worker and, with `--workers N`, once more with `--workers N` passed
through to `run`; from the store's per-trial records it measures the share of the wall time
outside training: 1 - (sum of the trainer-reported seconds, metrics.json wall_time_s) /
(workers x the span from the first trial's start to the last trial's end).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = "benchmarks/data/replay_fair.csv"
STUDY = "muon_vs_adamw"
CHECKPOINTS = (20, 100, 500, 1000, 2000)


# ------------------------------------------------------------------------------ replay


class Meter:
    """Exclusive time per label (a nested timed call is charged to its own label, not its caller's)
    and database commits, gathered per trial (a trial ends when store.finish returns)."""

    def __init__(self):
        self.stack: list[list] = []  # [label, start, child seconds]
        self.current: dict[str, float] = {}
        self.commits = 0
        self.writes = 0  # commits of a transaction that wrote something
        self.wrote = False
        self.trials: list[dict] = []
        self.mark = time.perf_counter()
        self.cpu_mark = time.process_time()
        self.gc_start: float | None = None

    def wrap(self, owner, attr: str, label: str, ends_trial: bool = False) -> None:
        inner = getattr(owner, attr)
        meter = self

        def timed(*a, **k):
            frame = [label, time.perf_counter(), 0.0]
            meter.stack.append(frame)
            try:
                return inner(*a, **k)
            finally:
                meter.stack.pop()
                spent = time.perf_counter() - frame[1]
                meter.current[label] = meter.current.get(label, 0.0) + spent - frame[2]
                if meter.stack:
                    meter.stack[-1][2] += spent
                if ends_trial and not meter.stack:
                    meter.end_trial(a[1] if len(a) > 1 else None, a[2] if len(a) > 2 else None)

        timed.__wrapped__ = inner
        setattr(owner, attr, timed)

    def end_trial(self, record, status) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.trials.append({"phase": getattr(record, "phase", None), "status": status, "total_s": now - self.mark,
                            "cpu_s": cpu - self.cpu_mark, "commits": self.commits, "writes": self.writes,
                            **self.current})
        self.mark, self.cpu_mark, self.current, self.commits, self.writes = now, cpu, {}, 0, 0

    def on_execute(self, conn, cursor, statement, *_):
        if not statement.lstrip()[:6].upper().startswith("SELECT"):
            self.wrote = True

    def on_gc(self, phase: str, info: dict) -> None:
        """Garbage collections, per generation (their time is inside the other labels' too)."""
        if phase == "start":
            self.gc_start = time.perf_counter()
        elif self.gc_start is not None:
            key = f"gc{info['generation']}"
            self.current[key] = self.current.get(key, 0.0) + time.perf_counter() - self.gc_start
            self.gc_start = None

    def on_commit(self, *_):
        self.commits += 1
        self.writes += self.wrote
        self.wrote = False

    def on_rollback(self, *_):
        self.wrote = False


def _instrument() -> Meter:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from research_agents.execution.replay import ReplayExecutor
    from research_agents.planners import policy, sampler
    from research_agents.report import plots
    from research_agents.report import round as round_report
    from research_agents.store.optuna import OptunaStore

    meter = Meter()
    event.listen(Engine, "commit", meter.on_commit)
    gc.callbacks.append(meter.on_gc)
    event.listen(Engine, "rollback", meter.on_rollback)
    event.listen(Engine, "before_cursor_execute", meter.on_execute)
    for attr in ("start", "records", "get_meta", "set_meta", "append_meta", "spent", "recover"):
        meter.wrap(OptunaStore, attr, "store")
    meter.wrap(OptunaStore, "finish", "store", ends_trial=True)
    meter.wrap(ReplayExecutor, "run", "executor")
    meter.wrap(sampler.SamplerPlanner, "propose", "planner")
    meter.wrap(policy.PolicyPlanner, "propose", "planner")
    meter.wrap(round_report, "write_round_report", "round_report")
    meter.wrap(plots, "trial_plot", "trial_plot")
    if hasattr(plots, "TrialPlots"):  # plots drawn by a helper process: the loop's share is handing them over
        meter.wrap(plots.TrialPlots, "submit", "trial_plot")
        meter.wrap(plots.TrialPlots, "close", "plots_close")
    return meter


def _window(trials: list[dict], end: int, width: int) -> dict:
    rows = trials[max(0, end - width):end]
    ms = lambda key: round(1000 * statistics.fmean(t.get(key, 0.0) for t in rows), 2)  # noqa: E731
    loop = [t["total_s"] - t.get("executor", 0.0) for t in rows]
    labels = ("store", "planner", "round_report", "trial_plot")
    out = {"trials": f"{max(1, end - width + 1)}-{end}", "loop_ms": round(1000 * statistics.fmean(loop), 2),
           **{f"{k}_ms": ms(k) for k in labels}}
    out["other_ms"] = round(out["loop_ms"] - sum(out[f"{k}_ms"] for k in labels), 2)
    out["executor_ms"] = ms("executor")
    out["gc_ms"] = round(1000 * statistics.fmean(sum(t.get(f"gc{g}", 0.0) for g in range(3)) for t in rows), 2)
    out["cpu_ms"] = round(1000 * statistics.fmean(t["cpu_s"] - t.get("executor", 0.0) for t in rows), 2)
    out["commits_per_trial"] = round(statistics.fmean(t["commits"] for t in rows), 2)
    out["write_commits_per_trial"] = round(statistics.fmean(t["writes"] for t in rows), 2)
    out["phases"] = sorted({t["phase"] for t in rows if t["phase"]})
    return out


def replay(args) -> dict:
    from research_agents import cli

    meter = _instrument()
    keep = args.out is not None
    out = Path(args.out) if keep else Path(tempfile.mkdtemp(prefix="loop-overhead-")) / "run"
    argv = ["run", "--study", args.study, "--budget", str(args.trials), "--planner", args.planner,
            "--executor", f"replay:{args.table}", "--out", str(out)]
    log = out.parent / f"{out.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    meter.mark = started
    with log.open("w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        code = cli.main(argv)
    wall = time.perf_counter() - started
    if code != 0:
        sys.exit(f"run exited {code}: see {log}")
    trials = meter.trials
    final_s = wall - sum(t["total_s"] for t in trials)
    drain_s = meter.current.get("plots_close", 0.0)  # (after the last trial: waiting for queued plots)
    points = {min(k, len(trials)) for k in args.at if k <= len(trials)} | {len(trials)}
    # the search's last window too (the study ends with confirmation runs, which plan nothing)
    first_confirm = next((i for i, t in enumerate(trials) if t["phase"] == "confirm"), None)
    if first_confirm is not None and first_confirm >= args.window:
        points.add(first_confirm)
    points = sorted(points)
    windows = [_window(trials, k, args.window) for k in points]
    blocks = [_window(trials, k, args.block) for k in range(args.block, len(trials) + 1, args.block)]
    return {"argv": ["python", "-m", "research_agents", *argv], "trials": len(trials), "window": args.window,
            "wall_s": round(wall, 2), "final_report_s": round(final_s - drain_s, 2),
            "plots_drain_s": round(drain_s, 2), "at": windows,
            "blocks": {"width": args.block, **{k: [b[k] for b in blocks] for k in (
                "loop_ms", "cpu_ms", "store_ms", "planner_ms", "round_report_ms", "trial_plot_ms", "gc_ms",
                "commits_per_trial")}},
            "out": str(out) if keep else None}


def print_replay(res: dict) -> None:
    print(f"replay: {res['trials']} trials in {res['wall_s']} s (after the last trial: waiting for the "
          f"background trial plots {res.get('plots_drain_s', 0)} s, final report {res['final_report_s']} s)")
    print(f"  {' '.join(res['argv'])}")
    cols = ("trials", "loop_ms", "cpu_ms", "store_ms", "planner_ms", "round_report_ms", "trial_plot_ms",
            "other_ms", "gc_ms", "executor_ms", "commits_per_trial", "write_commits_per_trial")
    heads = ("trials", "loop ms", "(cpu ms)", "store", "planner", "round rep", "trial plot", "rest", "(of it gc)",
             "(replay)", "commits", "(writing)")
    print("  " + " ".join(f"{h:>10}" for h in heads))
    for w in res["at"]:
        print("  " + " ".join(f"{w[c]!s:>10}" for c in cols))


# ------------------------------------------------------------------------------ real training


def _timestamp(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def real_run(args, workers: int) -> dict:
    """One real run of the default study; the share of its wall time outside training."""
    import optuna

    from research_agents.records import COUNTED, read_metrics
    from research_agents.store.optuna import default_url

    out = Path(tempfile.mkdtemp(prefix=f"loop-overhead-real-w{workers}-")) / "run"
    cmd = [sys.executable, "-m", "research_agents", "run", "--study", args.study, "--budget", str(args.budget),
           "--out", str(out), "--workers", str(workers)] + args.run_args  # (the default is all cores)
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(default_url(out), skip_table_creation=True)
    trials = []
    for summary in optuna.get_all_study_summaries(storage):
        for t in optuna.load_study(storage=storage, study_name=summary.study_name).get_trials(deepcopy=False):
            a = t.user_attrs
            if a.get("status") not in COUNTED:
                continue
            metrics = read_metrics(out / a["run_dir"])
            train = metrics.wall_time_s if metrics is not None else None
            trials.append({"start": _timestamp(a.get("started")), "end": _timestamp(a.get("finished")),
                           "train_s": train or 0.0})
    from research_agents.cli import experiments_dir
    from research_agents.config import load_study
    from research_agents.store import OptunaStore

    ahead = OptunaStore.for_study(out, load_study(args.study, experiments_dir()), readonly=True).get_meta("speculation")
    span = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    train = sum(t["train_s"] for t in trials)
    trial_s = sum(t["end"] - t["start"] for t in trials)
    return {"workers": workers, "command": " ".join(cmd[2:]), "trials": len(trials), "command_wall_s": round(wall, 1),
            "span_s": round(span, 1), "train_s": round(train, 1), "trial_s": round(trial_s, 1),
            "outside_training_share": round(1 - train / (workers * span), 3),
            "outside_trials_share": round(1 - trial_s / (workers * span), 3),
            "trained_ahead": ahead or {"started": 0, "used": 0, "discarded": 0}}


def print_real(rows: list[dict]) -> None:
    print("real training (share of workers x span not spent training; outside trials: not inside any trial "
          "record, which starts a run trained ahead on an idle worker when its round adopts it)")
    for r in rows:
        print(f"  workers {r['workers']}: {r['trials']} trials, span {r['span_s']} s, train {r['train_s']} s, "
              f"outside training {100 * r['outside_training_share']:.1f}%, outside trials "
              f"{100 * r['outside_trials_share']:.1f}%, trained ahead {r['trained_ahead']['started']} "
              f"(adopted {r['trained_ahead']['used']}) ({r['command']})")


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loop_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=2000, help="replay: the study's budget (default 2000)")
    p.add_argument("--planner", default="random", help="replay: the planner (default random: fills any budget)")
    p.add_argument("--study", default=STUDY)
    p.add_argument("--table", default=TABLE)
    p.add_argument("--window", type=int, default=20, help="trials averaged at each point (default 20)")
    p.add_argument("--block", type=int, default=100, help="width of the blocks of the JSON's curve (default 100)")
    p.add_argument("--at", type=int, nargs="+", default=list(CHECKPOINTS), help="trial counts to report at")
    p.add_argument("--out", help="replay: keep the run directory here (default: a temporary one)")
    p.add_argument("--real", action="store_true", help="real training instead of replay")
    p.add_argument("--budget", type=int, default=20, help="--real: the budget (default 20)")
    p.add_argument("--workers", type=int, default=None, help="--real: also run with --workers N")
    p.add_argument("--run-arg", dest="run_args", action="append", default=[],
                   help="--real: one more argument for `run` (repeatable), e.g. --run-arg=--device=cuda")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    result = {
        "benchmark": "loop_overhead",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.loop_overhead", *(argv if argv is not None else sys.argv[1:])]),
    }
    if args.real:
        rows = [real_run(args, 1)]
        if args.workers and args.workers > 1:
            rows.append(real_run(args, args.workers))
        print_real(rows)
        result["real"] = rows
    else:
        res = replay(args)
        print_replay(res)
        result["replay"] = res
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
