"""How wide must the rung margin be? Figures from a replay table's curves (research_agents/rungs.py).

    python -m benchmarks.rung_margin [--table benchmarks/data/replay_tiny.csv] [--factors 0 1 2 3 4 6 8]
                                     [--leaders 5] [--json out.json]

A search run is stopped at 25/50/75% of its steps when its val loss there is above its arm's
leader's (the mean over the leader's seeds) by more than FACTOR x the arm's seed-noise sd. Per arm
(the table's optimizer) and candidate factor it prints:

* best stopped (worst): the share of the eventual best configuration's runs (one per table seed)
  that the rule would stop, with the leader that stops it most often: any other configuration of
  the arm (the leader is whatever was best when the best was tried);
* best stopped (top-k): the same share, averaged over the `--leaders` configurations that finish
  nearest the best (the plausible leaders before the best is found);
* compute saved: the share of all the arm's steps the rule saves when its leader is the best
  configuration (what the rule saves late in a search), and with the k-th best as leader
  (early on).

The noise sd of an arm is the pooled sd over seeds of its configurations' final val loss (what the
loop's tuning evidence measures, threshold / 2). A run that diverged before a rung has no loss
there and is not judged at it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "data" / "replay_tiny.csv"
RUNGS = (25, 50, 75)
NOT_KNOBS = {"arm", "seed", "status", "val_loss", "val_accuracy", "train_loss", "loss_25", "loss_50", "loss_75",
             "loss_100", "diverged_step", "wall_time_s"}


def _f(text: str | None) -> float | None:
    if text in (None, ""):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def load(path: Path) -> dict[str, dict[tuple, list[dict]]]:
    """{arm: {config: [{"final": loss, q: loss at q%}, one per seed]}} (completed runs with a final loss)."""
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    knobs = [k for k in rows[0] if k not in NOT_KNOBS]
    out: dict[str, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        final = _f(r["val_loss"])
        if r["status"] != "completed" or final is None:
            continue
        run = {"final": final, **{q: _f(r.get(f"loss_{q}")) for q in RUNGS}}
        out[r["arm"]][tuple(r[k] for k in knobs)].append(run)
    return out


def noise_sd(configs: dict[tuple, list[dict]]) -> float:
    num = den = 0.0
    for runs in configs.values():
        if len(runs) >= 2:
            num += statistics.variance([r["final"] for r in runs]) * (len(runs) - 1)
            den += len(runs) - 1
    return math.sqrt(num / den) if den else float("nan")


def mean_curve(runs: list[dict]) -> dict[int, float]:
    return {q: statistics.fmean(v) for q in RUNGS if (v := [r[q] for r in runs if r[q] is not None])}


def stopped_at(run: dict, leader: dict[int, float], slack: float) -> int | None:
    """The first rung at which the rule stops `run` (None: it runs on)."""
    for q in RUNGS:
        if q in leader and run[q] is not None and run[q] > leader[q] + slack:
            return q
    return None


def arm_figures(configs: dict[tuple, list[dict]], factors: list[float], k: int) -> dict:
    ranked = sorted(configs, key=lambda c: statistics.fmean(r["final"] for r in configs[c]))
    best, others = ranked[0], ranked[1:]
    sd = noise_sd(configs)
    curves = {c: mean_curve(configs[c]) for c in configs}
    runs_all = [(c, r) for c in configs for r in configs[c]]
    out = {"configs": len(configs), "runs": len(runs_all), "noise_sd": sd, "factors": {}}
    for f in factors:
        slack = f * sd
        share = {c: statistics.fmean(stopped_at(r, curves[c], slack) is not None for r in configs[best])
                 for c in others}
        top = others[:k]

        def saved(leader: tuple, slack: float = slack) -> float:
            cut = [stopped_at(r, curves[leader], slack) for c, r in runs_all if c != leader]
            return statistics.fmean((100 - q) / 100 if q is not None else 0.0 for q in cut)

        out["factors"][f] = {
            "best_stopped_worst": max(share.values()) if share else 0.0,
            "best_stopped_topk": statistics.fmean(share[c] for c in top) if top else 0.0,
            "saved_leader_best": saved(best),
            "saved_leader_kth": saved(top[-1]) if top else 0.0,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--factors", type=float, nargs="+", default=[0, 1, 2, 3, 4, 6, 8])
    ap.add_argument("--leaders", type=int, default=5, help="plausible leaders: the configs finishing nearest the best")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    try:
        table = load(args.table)
    except (OSError, KeyError, ValueError, IndexError) as err:
        print(f"error: {args.table}: not a replay table ({err})")
        return 2
    result = {arm: arm_figures(configs, args.factors, args.leaders) for arm, configs in sorted(table.items())}
    print(f"table {args.table.name}; margin = factor x the arm's seed-noise sd; rungs at {RUNGS}% of the steps")
    print(f"{'arm':<7}{'factor':>7}{'margin':>8}{'best stopped worst':>20}{'top-k':>8}"
          f"{'saved (leader best)':>21}{'(k-th)':>8}")
    for arm, fig in result.items():
        for f, v in fig["factors"].items():
            print(f"{arm:<7}{f:>7g}{f * fig['noise_sd']:>8.3f}{v['best_stopped_worst']:>20.0%}"
                  f"{v['best_stopped_topk']:>8.0%}{v['saved_leader_best']:>21.0%}{v['saved_leader_kth']:>8.0%}")
        print(f"{arm:<7} {fig['configs']} configs, {fig['runs']} runs, noise sd {fig['noise_sd']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"table": args.table.name, "arms": result}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
