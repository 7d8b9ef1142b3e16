"""PNG figures for the final report (matplotlib, Agg backend, files under OUT/plots/).

Each function writes one PNG and returns its path, or returns None when there is nothing to plot.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from research_agents.executor import read_metrics  # noqa: E402
from research_agents.findings import Findings  # noqa: E402
from research_agents.store import TrialRecord  # noqa: E402

MAX_HEATMAP_VALUES = 8


def _save(fig, out: Path, name: str) -> Path:
    path = Path(out) / "plots" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _history(out: Path, run_dir: str) -> list[dict]:
    data = read_metrics(Path(out) / run_dir) if run_dir else None
    hist = data.get("history") if isinstance(data, dict) else None
    return hist if isinstance(hist, list) else []


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def loss_curves(out: Path, records: list[TrialRecord], findings: Findings) -> Path | None:
    """Val loss vs optimizer step of each arm's leader: one line per run, one colour per config."""
    leaders = findings.leaders()
    if not leaders:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = 0
    for i, (arm, row) in enumerate(leaders.items()):
        colour = colours[i % len(colours)]
        labelled = False
        for r in records:
            if r.config != row.config:
                continue
            pts = [(h["step"], h["val_loss"]) for h in _history(out, r.run_dir)
                   if isinstance(h, dict) and _finite(h.get("val_loss")) and _finite(h.get("step"))]
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
    return _save(fig, out, "loss_curves.png")


def lr_sensitivity_plot(out: Path, records: list[TrialRecord], findings: Findings) -> Path | None:
    """Val loss vs learning rate (log x), one series per arm, band = best loss + margin."""
    if not findings.lr_sensitivity:
        return None
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
    return _save(fig, out, "lr_sensitivity.png")


def _determined(k: str, by: str, runs: list[TrialRecord]) -> bool:
    """k's value is a function of by's (e.g. adamw_lr = lr / 10): it adds no axis to a grid."""
    seen: dict = {}
    return all(seen.setdefault(repr(r.params[by]), r.params[k]) == r.params[k] for r in runs)


def _label(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _grid_for_arm(records: list[TrialRecord], arm: str):
    """x = the parameter with the most values; y = every other grid parameter combined when that
    fits (seed 002's 3 x 2 x 3 grid shows all 18 cells), else the next one, averaged over the rest."""
    runs = [r for r in records if r.arm == arm and r.phase == "search" and r.status in
            ("completed", "diverged", "failed", "timeout")]
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
    return _save(fig, out, "heatmap.png")


def best_so_far(out: Path, records: list[TrialRecord], findings: Findings) -> Path | None:
    """Best val loss found vs search runs used: overall and per arm."""
    series = {"all arms": findings.best_so_far, **findings.best_so_far_by_arm}
    series = {k: [(i, v) for i, v in s if v is not None] for k, s in series.items()}
    series = {k: s for k, s in series.items() if s}
    if not series:
        return None
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
    return _save(fig, out, "best_so_far.png")


def make_all(out: Path, records: list[TrialRecord], findings: Findings) -> dict[str, Path]:
    """Every plot that has something to show: {title: path}."""
    made = {}
    for title, fn in (("Loss curves of the leaders", loss_curves),
                      ("LR sensitivity", lr_sensitivity_plot),
                      ("Two-parameter grid", heatmap),
                      ("Best so far", best_so_far)):
        path = fn(out, records, findings)
        if path is not None:
            made[title] = path
    return made


__all__ = ["loss_curves", "lr_sensitivity_plot", "heatmap", "best_so_far", "make_all"]
