"""How wide must the rung margin be? Figures from a replay table's curves (research_agents/rungs.py).

    python -m benchmarks.rung_margin [--table benchmarks/data/replay_fair.csv] [--factors 1 3 6]
                                     [--lates 0 0.5 1 1.5 2] [--leaders 5] [--json out.json]

A search run is stopped at 25/50/75% of its steps when its val loss there is above its arm's
leader's (the mean over the leader's seeds) by more than FACTOR x the arm's seed-noise sd plus
LATE x what the leader itself still gained from that rung to its end (rankings change late: on
replay_fair.csv an AdamW config within 2 sd of the best, a high AdamW-leg LR, is 0.68 nats behind
a leader that ends worse at 25% of training, 0.28 at 50%, 0.08 at 75%: 0.99, 0.99 and 0.84 of
that leader's own drop from there). Per arm (the table's optimizer) and candidate rule it prints:

* best stopped (worst): the share of the eventual best configuration's runs (one per table seed)
  that the rule would stop, with the leader that stops it most often: any other configuration of
  the arm (the leader is whatever was best when the best was tried);
* best stopped (top-k): the same share, averaged over the `--leaders` configurations that finish
  nearest the best (the plausible leaders before the best is found);
* compute saved: the share of all the arm's steps the rule saves when its leader is the best
  configuration (what the rule saves late in a search), and with the k-th best as leader
  (early on).

* near-best runs stopped: of every run of a configuration within 2 sd of the best, judged against
  every leader that ends behind it, how many the rule stops (the run that would have won, stopped);

The noise sd of an arm is the seed sd of its best configuration's final val loss (what the loop's
tuning evidence judges its leader with). A run that diverged before a rung has no loss there and
is not judged at it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from research_agents import rungs
from trainer.spec import TrialSpec

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "data" / "replay_fair.csv"
RUNGS = rungs.RUNGS
RUNG_SPEC = TrialSpec(steps=100, eval_every=25)  # evals at the rungs' own shares of the steps (loss_25/50/75)
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


def best_sd(configs: dict[tuple, list[dict]], best: tuple) -> float:
    """The seed-noise sd of the arm's best configuration (what the loop judges its leader with)."""
    finals = [r["final"] for r in configs[best]]
    return statistics.stdev(finals) if len(finals) >= 2 else float("nan")


def mean_curve(runs: list[dict]) -> dict[int, float]:
    """{rung %, and 100 (the end): mean loss there} over a configuration's runs (the leader curve
    research_agents.rungs.rule reads)."""
    out = {q: statistics.fmean(v) for q in RUNGS if (v := [r[q] for r in runs if r[q] is not None])}
    out[100] = statistics.fmean(r["final"] for r in runs)
    return out


def limits(leader: dict[int, float], slack: float, late: float) -> dict[int, float]:
    """{rung %: the most val loss allowed there} behind `leader`: the loop's own rule
    (research_agents.rungs.rule) on a run whose evals fall at its rungs, as the table's do."""
    by_step = rungs.rule(RUNG_SPEC, leader, slack, late)
    return {q: by_step[step] for q in RUNGS if (step := RUNG_SPEC.eval_step_by(q)) in by_step}


def stopped_at(run: dict, limit: dict[int, float]) -> int | None:
    """The first rung at which the rule stops `run` (None: it runs on)."""
    for q in RUNGS:
        if q in limit and run[q] is not None and run[q] > limit[q]:
            return q
    return None


def arm_figures(configs: dict[tuple, list[dict]], factors: list[float], lates: list[float], k: int) -> dict:
    ranked = sorted(configs, key=lambda c: statistics.fmean(r["final"] for r in configs[c]))
    best, others = ranked[0], ranked[1:]
    sd = best_sd(configs, best)
    curves = {c: mean_curve(configs[c]) for c in configs}
    good = [c for c in ranked if curves[c][100] <= curves[best][100] + 2 * sd]
    runs_all = [(c, r) for c in configs for r in configs[c]]
    out = {"configs": len(configs), "runs": len(runs_all), "noise_sd": sd, "good_configs": len(good), "rules": []}
    for f in factors:
        for late in lates:
            slack = f * sd
            limit = {c: limits(curves[c], slack, late) for c in configs}
            share = {c: statistics.fmean(stopped_at(r, limit[c]) is not None for r in configs[best]) for c in others}
            top = others[:k]
            # every run of a near-best configuration against every leader that ends behind it
            judged = [stopped_at(r, limit[lead]) is not None
                      for g in good for r in configs[g] for lead in configs if curves[lead][100] > curves[g][100]]

            def saved(leader: tuple, limit: dict = limit) -> float:
                cut = [stopped_at(r, limit[leader]) for c, r in runs_all if c != leader]
                return statistics.fmean((100 - q) / 100 if q is not None else 0.0 for q in cut)

            out["rules"].append({
                "factor": f, "late": late, "margin": slack,
                "best_stopped_worst": max(share.values()) if share else 0.0,
                "best_stopped_topk": statistics.fmean(share[c] for c in top) if top else 0.0,
                "good_stopped": sum(judged), "good_judged": len(judged),
                "saved_leader_best": saved(best),
                "saved_leader_kth": saved(top[-1]) if top else 0.0,
            })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--factors", type=float, nargs="+", default=[1, 3, 6])
    ap.add_argument("--lates", type=float, nargs="+", default=[0, 0.5, 1, 1.5, 2])
    ap.add_argument("--leaders", type=int, default=5, help="plausible leaders: the configs finishing nearest the best")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    try:
        table = load(args.table)
    except (OSError, KeyError, ValueError, IndexError) as err:
        print(f"error: {args.table}: not a replay table ({err})")
        return 2
    result = {arm: arm_figures(configs, args.factors, args.lates, args.leaders)
              for arm, configs in sorted(table.items())}
    print(f"table {args.table.name}; margin = factor x the seed-noise sd of the arm's best config + late x the "
          f"leader's drop from the rung to its end; rungs at {RUNGS}% of the steps")
    print(f"{'arm':<7}{'factor':>7}{'late':>6}{'margin':>8}{'best stopped worst':>20}{'top-k':>8}"
          f"{'near-best runs stopped':>24}{'saved (leader best)':>21}{'(k-th)':>8}")
    for arm, fig in result.items():
        for v in fig["rules"]:
            good = f"{v['good_stopped']}/{v['good_judged']}"
            print(f"{arm:<7}{v['factor']:>7g}{v['late']:>6g}{v['margin']:>8.3f}{v['best_stopped_worst']:>20.0%}"
                  f"{v['best_stopped_topk']:>8.0%}{good:>24}{v['saved_leader_best']:>21.0%}{v['saved_leader_kth']:>8.0%}")
        print(f"{arm:<7} {fig['configs']} configs ({fig['good_configs']} within 2 sd of the best), {fig['runs']} runs, "
              f"seed sd of the best {fig['noise_sd']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"table": args.table.name, "arms": result}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
