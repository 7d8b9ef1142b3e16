"""Every figure, with matplotlib (Agg backend): one function per PNG, each returning its path, or
None when there is nothing to plot. Computing happens in research_agents.analysis.

Report figures go to OUT/plots/; the seeds' artifacts to OUT/ (comparison_plot.png,
momentum_schedules.png) and to each trial's directory (metrics_plot.png).
"""

from __future__ import annotations

import math
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from research_agents.analysis.claims import Run
from research_agents.analysis.models import Findings
from research_agents.analysis.seed_analyses import MomentumAnalysis, mean_curve
from research_agents.records import COUNTED, HistoryPoint, TrialMetrics, TrialRecord, read_metrics

MAX_HEATMAP_VALUES = 8


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> Path:
    """Write the figure through a temporary file and os.replace: a process killed while it draws
    leaves no half PNG (which would then count as drawn)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    os.replace(tmp, path)
    _plt().close(fig)
    return path


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ------------------------------------------------------------------------------ per trial


def trial_plot(run_dir: Path) -> Path | None:
    """metrics_plot.png in the trial's directory (None when it has no history); never raises.
    (The helper process's entry: it reads the trial's metrics.json, `draw_trial` draws.)"""
    try:
        metrics = read_metrics(Path(run_dir))
    except Exception:  # a plot must never break a run
        return None
    return draw_trial(metrics, Path(run_dir) / "metrics_plot.png")


def draw_trial(metrics: TrialMetrics | None, path: Path) -> Path | None:
    """One trial's 4-panel figure (loss vs time and steps, val accuracy, LR) at `path`; never raises."""
    try:
        hist = metrics.history if metrics is not None else []
        if not hist:
            return None
        spec = metrics.spec
        plt = _plt()
        fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
        evals = [h for h in hist if _finite(h.val_loss)]
        for ax, x in ((axes[0, 0], "time_s"), (axes[0, 1], "step")):
            pts = [(getattr(h, x), h.train_loss) for h in hist if _finite(getattr(h, x)) and _finite(h.train_loss)]
            if pts:
                ax.plot(*zip(*pts), lw=0.8, alpha=0.6, label="train loss")
            vpts = [(getattr(h, x), h.val_loss) for h in evals if _finite(getattr(h, x))]
            if vpts:
                ax.plot(*zip(*vpts), marker="o", ms=3, label="val loss")
            ax.set_xlabel("wall time (s)" if x == "time_s" else "optimizer step")
            ax.set_ylabel("loss (nats)")
            ax.set_title(f"Loss vs {'time' if x == 'time_s' else 'steps'}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        ax = axes[1, 0]
        apts = [(h.step, h.val_accuracy) for h in evals if _finite(h.val_accuracy)]
        if apts:
            ax.plot(*zip(*apts), marker="o", ms=3, color="tab:green")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("val accuracy")
        ax.set_title("Validation accuracy")
        ax.grid(alpha=0.3)
        ax = axes[1, 1]
        for key, label in (("lr", "LR (main optimizer)"), ("adamw_lr", "AdamW-leg LR")):
            pts = [(h.step, getattr(h, key)) for h in hist if _finite(getattr(h, key))]
            if pts and not (key == "adamw_lr" and spec is not None and spec.optimizer == "adamw"):
                ax.plot(*zip(*pts), label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("learning rate")
        ax.set_title("LR schedule")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        loss = f"{metrics.final.val_loss:.4f}" if _finite(metrics.final.val_loss) else "n/a"
        fig.suptitle(f"{spec.optimizer if spec else '?'} lr={spec.lr if spec else None} "
                     f"seed={spec.seed if spec else None}: "
                     f"{metrics.status}, final val loss {loss}", fontsize=10)
        return _save(fig, path, dpi=100)
    except Exception:  # a plot must never break a run
        return None

class TrialPlots:
    """Each trial's metrics_plot.png, drawn by a helper process as trials end, so that the loop
    never waits for matplotlib (about 0.3 s a plot on a CPU core). `submit` queues a trial;
    `close` waits until every queued plot is drawn.

    The helper reads run directories, one a line, on its stdin and ends at EOF; it ends at once
    when its driver is killed (it watches its parent), and a plot a killed driver never had drawn
    is drawn by the next final report, which draws every missing one. It ignores Ctrl-C (the
    driver's to handle).
    When the helper cannot be started or dies, plots are drawn in this process, in `close` at
    the latest. Never raises for a plot."""

    def __init__(self, background: bool = True):
        self.background = background
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._feeder: threading.Thread | None = None
        self._helper: subprocess.Popen | None = None
        self._left: list[Path] = []  # plots the helper could not take: drawn here in close()

    def submit(self, run_dir: Path) -> None:
        if not self.background:
            trial_plot(run_dir)
            return
        if self._feeder is None:
            self._feeder = threading.Thread(target=self._feed, name="trial-plots", daemon=True)
            self._feeder.start()
        self._queue.put(Path(run_dir).resolve())

    def close(self) -> None:
        """Wait for every submitted plot (drawn by the helper, or here when it could not)."""
        if self._feeder is not None:
            self._queue.put(None)
            self._feeder.join()
            self._feeder = None
        if self._helper is not None:
            try:
                self._helper.stdin.close()
            except OSError:
                pass
            self._helper.wait()
            self._helper = None
        left, self._left = self._left, []
        for run_dir in left:
            trial_plot(run_dir)

    def _feed(self) -> None:
        """The feeder thread: starts the helper, then hands it each queued run directory (a slow
        helper blocks this thread, never the loop)."""
        import research_agents

        root = str(Path(research_agents.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        try:
            # (its output to nowhere: a helper still drawing after its driver was killed holds no
            # pipe of whoever reads the driver's output)
            self._helper = subprocess.Popen([sys.executable, "-c", HELPER], stdin=subprocess.PIPE, text=True, env=env,
                                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            self._helper = None
        while (run_dir := self._queue.get()) is not None:
            try:
                if self._helper is None or self._helper.poll() is not None:
                    raise BrokenPipeError
                self._helper.stdin.write(f"{run_dir}\n")
                self._helper.stdin.flush()
            except (OSError, ValueError):  # no helper, or it died: drawn in this process at close()
                self._left.append(run_dir)


HELPER = """\
import os, signal, sys, threading, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.SIG_IGN)
parent = os.getppid()
def orphaned():  # the driver is gone (killed): so is its helper, at once (nothing outlives a run)
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)
threading.Thread(target=orphaned, daemon=True).start()
from research_agents.report.plots import trial_plot
for line in sys.stdin:
    if line.strip():
        trial_plot(Path(line.strip()))
"""


# ------------------------------------------------------------------------------ the report's figures


def loss_curves(out: Path, records: list[TrialRecord], findings: Findings,
                histories: Mapping[int, list[HistoryPoint]]) -> Path | None:
    """Val loss vs optimizer step of each arm's leader: one line per run, one colour per config
    (`histories`: each run's metrics history by trial id, as `leader_histories` reads them)."""
    leaders = findings.leaders()
    if not leaders:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = 0
    for i, (arm, row) in enumerate(leaders.items()):
        colour = colours[i % len(colours)]
        labelled = False
        for r in records:
            if r.config != row.config:
                continue
            pts = [(h.step, h.val_loss) for h in histories.get(r.id, []) if _finite(h.val_loss) and _finite(h.step)]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, color=colour, alpha=0.75, lw=1.2, marker="." if len(xs) < 20 else None,
                    label=None if labelled else (row.label if row.label.startswith(f"{arm} ")
                                                       else f"{arm}: {row.label}")[:70])
            labelled = True
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("val loss (nats)")
    ax.set_title("Validation loss of each arm's leader (one line per seed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(out) / "plots" / "loss_curves.png", dpi=110)


def lr_sensitivity_plot(out: Path, records: list[TrialRecord], findings: Findings) -> Path | None:
    """Val loss vs learning rate (log x), one series per arm, band = best loss + margin."""
    if not findings.lr_sensitivity:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (arm, rng) in enumerate(findings.lr_sensitivity.items()):
        colour = colours[i % len(colours)]
        raw = [(r.params["lr"], r.val_loss) for r in records
               if r.arm == arm and r.phase == "search" and r.ok and _finite(r.params.get("lr"))]
        if raw:
            ax.scatter(*zip(*raw), color=colour, s=12, alpha=0.4)
        pts = [(lr, m) for lr, m in zip(rng.lrs, rng.mean_losses) if m is not None]
        if pts:
            ax.plot(*zip(*pts), color=colour, marker="o", label=f"{arm} (mean per lr)")
        if rng.best_loss is not None and rng.loss_cutoff is not None and rng.lrs:
            ax.fill_between([min(rng.lrs), max(rng.lrs)], rng.best_loss, rng.loss_cutoff, color=colour,
                            alpha=0.12, label=f"{arm}: within {rng.margin:g} of best")
        if rng.lr_lo is not None and rng.lr_hi is not None:
            ax.axvspan(rng.lr_lo, rng.lr_hi, color=colour, alpha=0.06)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("final val loss (nats)")
    ax.set_title("LR sensitivity (search runs)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, Path(out) / "plots" / "lr_sensitivity.png", dpi=110)


def _determined(k: str, by: str, runs: list[TrialRecord]) -> bool:
    """k's value is a function of by's (e.g. adamw_lr = lr / 10): it adds no axis to a grid."""
    seen: dict = {}
    return all(seen.setdefault(repr(r.params[by]), r.params[k]) == r.params[k] for r in runs)


def _label(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _grid_for_arm(records: list[TrialRecord], arm: str):
    """x = the parameter with the most values; y = every other grid parameter combined when that
    fits (seed 002's 3 x 2 x 3 grid shows all 18 cells), else the next one, averaged over the rest."""
    runs = [r for r in records if r.arm == arm and r.phase == "search" and r.status in COUNTED]
    values: dict[str, set] = {}
    for r in runs:
        for k, v in r.params.items():
            if isinstance(v, (int, float, str, bool)):
                values.setdefault(k, set()).add(v)
    cands = [k for k, vs in values.items() if 2 <= len(vs) <= MAX_HEATMAP_VALUES
             and all(k in r.params for r in runs)]
    cands.sort(key=lambda k: -len(values[k]))
    axes: list[str] = []
    for k in cands:
        if not any(_determined(k, a, runs) for a in axes):
            axes.append(k)
    if len(axes) < 2:
        return None
    px = axes[0]
    combined = {tuple(r.params[k] for k in axes[1:]) for r in runs}
    pys = axes[1:] if len(combined) <= 2 * MAX_HEATMAP_VALUES else axes[1:2]

    def order(vs):
        try:
            return sorted(vs)
        except TypeError:
            return sorted(vs, key=str)

    xs = order(values[px])
    ys = order({tuple(r.params[k] for k in pys) for r in runs})
    cells: dict[tuple, list] = {}
    for r in runs:
        cells.setdefault((r.params[px], tuple(r.params[k] for k in pys)), []).append(r)
    if len(cells) < 3:
        return None
    shown = [px, *pys]
    others = sorted(k for k in {k for r in runs for k in r.params} - set(shown)
                    if not (all(k in r.params for r in runs)
                            and (len(values.get(k, ())) < 2 or any(_determined(k, a, runs) for a in shown))))
    return px, pys, xs, ys, cells, others


def heatmap(out: Path, records: list[TrialRecord], findings: Findings) -> Path | None:
    """Mean val loss over a parameter grid of each arm's search runs (annotated cells)."""
    grids = {arm: g for arm in dict.fromkeys(r.arm for r in records) if (g := _grid_for_arm(records, arm))}
    if not grids:
        return None
    import numpy as np

    tall = max(len(g[3]) for g in grids.values())
    plt = _plt()
    fig, axes = plt.subplots(1, len(grids), figsize=(5.2 * len(grids) + (1.5 if tall > 8 else 0),
                                                      max(4.4, 0.45 * tall + 1.5)), squeeze=False)
    for ax, (arm, (px, pys, xs, ys, cells, others)) in zip(axes[0], grids.items()):
        grid = np.full((len(ys), len(xs)), np.nan)
        text = [["" for _ in xs] for _ in ys]
        for (vx, vy), rs in cells.items():
            i, j = ys.index(vy), xs.index(vx)
            ok = [r.val_loss for r in rs if r.ok]
            if ok:
                grid[i, j] = float(np.mean(ok))
                text[i][j] = f"{grid[i, j]:.3f}\n(n={len(ok)})"
            else:
                text[i][j] = "diverged" if any(r.status == "diverged" for r in rs) else "failed"
        finite = grid[np.isfinite(grid)]
        im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", aspect="auto", origin="lower",
                       vmin=finite.min() if finite.size else None, vmax=finite.max() if finite.size else None)
        for i in range(len(ys)):
            for j in range(len(xs)):
                if text[i][j]:
                    light = finite.size and grid[i, j] - finite.min() < 0.5 * (finite.max() - finite.min())
                    ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7,  # dark text on yellow
                            color="red" if not np.isfinite(grid[i, j]) else ("black" if light else "white"))
        ax.set_xticks(range(len(xs)), [_label(v) for v in xs])
        ylabels = [" ".join(_label(v) if len(pys) == 1 else f"{k.split('.')[-1]}={_label(v)}"
                            for k, v in zip(pys, vy)) for vy in ys]
        ax.set_yticks(range(len(ys)), ylabels, fontsize=7 if len(pys) > 1 else None)
        ax.set_xlabel(px)
        ax.set_ylabel(" x ".join(pys))
        title = f"{arm}: mean val loss"
        if others:
            title += f"\n(averaged over {', '.join(o.split('.')[-1] for o in others)})"
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, Path(out) / "plots" / "heatmap.png", dpi=110)


def best_so_far(out: Path, records: list[TrialRecord], findings: Findings) -> Path | None:
    """Best val loss found vs search runs used: overall and per arm."""
    series = {"all arms": findings.best_so_far, **findings.best_so_far_by_arm}
    series = {k: [(i, v) for i, v in s if v is not None] for k, s in series.items()}
    series = {k: s for k, s in series.items() if s}
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in series.items():
        xs, ys = zip(*pts)
        ax.step(xs, ys, where="post", marker=".", lw=2.2 if name == "all arms" else 1.2,
                color="black" if name == "all arms" else None, label=name)
    ax.set_xlabel("search runs used (per series)")
    ax.set_ylabel("best val loss so far (nats)")
    ax.set_title("Best search result vs runs used")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(out) / "plots" / "best_so_far.png", dpi=110)

def make_all(out: Path, records: list[TrialRecord], findings: Findings,
             histories: Mapping[int, list[HistoryPoint]]) -> dict[str, Path]:
    """Every report figure that has something to show: {title: path}. The figures read no file:
    `histories` holds the metrics history of the leaders' runs (`leader_histories`)."""
    made = {}
    for title, path in (("Loss curves of the leaders", loss_curves(out, records, findings, histories)),
                        ("LR sensitivity", lr_sensitivity_plot(out, records, findings)),
                        ("Two-parameter grid", heatmap(out, records, findings)),
                        ("Best so far", best_so_far(out, records, findings))):
        if path is not None:
            made[title] = path
    return made


# ------------------------------------------------------------------------------ the seeds' study figures


def comparison_plot(out: Path, runs: list[Run], fnd: Findings) -> Path | None:
    """OUT/comparison_plot.png: val loss curves per configuration and final val loss bars with 95% CIs."""
    rows = [c for c in fnd.configs if c.summary.mean is not None]
    if not rows:
        return None
    plt = _plt()
    height = max(4.5, 0.28 * len(rows) + 1.5)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, height), gridspec_kw={"width_ratios": [1.2, 1]})
    for c in rows:
        steps, losses = mean_curve([r for r in runs if r.record.config == c.config])
        if steps:
            left.plot(steps, losses, lw=1.6 if c.rank <= 10 else 0.7, alpha=1.0 if c.rank <= 10 else 0.4,
                      label=f"{c.rank}. {c.label}"[:48] if c.rank <= 10 else None)
    left.set_xlabel("optimizer step")
    left.set_ylabel("val loss (nats), mean over seeds")
    left.set_title("Validation loss (top 10 labelled)")
    left.grid(alpha=0.3)
    if left.get_legend_handles_labels()[0]:  # no curve when every run failed
        left.legend(fontsize=7)
    ys = list(range(len(rows)))[::-1]
    means = [c.summary.mean for c in rows]
    err = [[max(0.0, c.summary.mean - c.summary.ci_low) if c.summary.ci_low is not None else 0.0 for c in rows],
           [max(0.0, c.summary.ci_high - c.summary.mean) if c.summary.ci_high is not None else 0.0 for c in rows]]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    arms = list(dict.fromkeys(c.arm for c in rows))
    right.barh(ys, means, xerr=err, capsize=2, color=[colours[arms.index(c.arm) % len(colours)] for c in rows])
    right.set_yticks(ys, [f"{c.label} (n={c.n})"[:40] for c in rows], fontsize=7)
    lo = min(c.summary.ci_low if c.summary.ci_low is not None else c.summary.mean for c in rows)
    hi = max(c.summary.ci_high if c.summary.ci_high is not None else c.summary.mean for c in rows)
    pad = max(0.02, 0.1 * (hi - lo))
    right.set_xlim(lo - pad, hi + pad)
    right.set_xlabel("final val loss, mean and 95% CI over seeds (lower is better)")
    right.set_title("Final validation loss by configuration (colour = arm)")
    right.grid(alpha=0.3, axis="x")
    return _save(fig, Path(out) / "comparison_plot.png", dpi=100)


def momentum_schedules_plot(out: Path, analysis: MomentumAnalysis) -> Path:
    """OUT/momentum_schedules.png: the momentum of each schedule as its runs recorded it."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, pts in analysis.curves.items():
        if pts:
            ax.plot(*zip(*pts), lw=1.4, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("Muon momentum (recorded)")
    ax.set_title("Momentum schedules as the runs recorded them")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, Path(out) / "momentum_schedules.png", dpi=100)


__all__ = ["trial_plot", "TrialPlots", "loss_curves", "lr_sensitivity_plot", "heatmap", "best_so_far", "make_all",
           "comparison_plot", "momentum_schedules_plot"]
