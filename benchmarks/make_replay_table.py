"""Build a replay table: real CPU trials of a study over a grid of its search space.

    python -m benchmarks.make_replay_table [--study muon_vs_adamw] [--scale NAME]
        [--points KNOB=N ...] [--values [ARM:]KNOB=V1,V2,... ...] [--seeds 3] [--extra-seeds 3]
        [--out FILE] [--limit N] [--shard K/N]

Every row is one real training run of `trainer.train` on the study's own trial spec (its preset,
fixed and tied settings: e.g. the default study's Muon arm trains its AdamW leg at 0.1 x its LR),
in this process, on one thread (as the loop's executor runs trials), on the CPU. The grid, per arm:

* every searched knob at N points of its range: log-spaced where the space is log, evenly spaced
  otherwise, every choice of a choice knob. N defaults to 8 for a log float, 3 for a linear float or
  an int; a conditional knob (`when`) takes 1 point, the middle of its range, and only where its
  condition holds. `--points KNOB=N` sets N for a knob of every arm that searches it (`--points
  adamw_lr=6` for a study that searches the AdamW leg's LR in both arms); `--values KNOB=V1,V2`
  (or `ARM:KNOB=...` for one arm) gives the points themselves (e.g. denser around an optimum);
* seeds 0..S-1 (`--seeds`) for every config, then `--extra-seeds` more for each arm's three best
  configs and the grid neighbours of its best along each log-scaled knob (its LRs: around each
  optimum, where the noise decides rankings).

Columns: `arm` (the optimizer, as replay matches it), `lr` and `adamw_lr` (the hidden matrices' LR
and the AdamW leg's LR as trained: both, in every arm), every other knob of every arm's space, then
the results (research_agents/execution/replay.py RESULT_COLUMNS: curves at 25/50/75/100%).
The run is resumable: rows already in the output file are kept and not trained again. `--shard K/N`
trains only every N-th run (from the K-th): run N shards at once into N files and concatenate them
(one header) into the table. The extra seeds start only once the base grid is complete in the file
(the near-optimum configs come from it): to shard them too, copy the merged table into each
shard's file and run the shards again, then merge their new rows. The replay
executor (`--executor replay:FILE`) answers trials of any study whose knobs the table holds.
The committed tables:
* benchmarks/data/replay_fair.csv, for the default (fair) study: 729 runs (about 65 CPU minutes),
  rebuilt by
      python -m benchmarks.make_replay_table --out benchmarks/data/replay_fair.csv --seeds 3 \
          --extra-seeds 3 --values muon:lr=0.02,0.05,0.1,0.2,0.5 adamw_lr=0.005,0.015,0.04,0.1,0.25 \
          momentum=0.85,0.95 ns_steps=3,5 adamw:lr=0.0005,0.0015,0.003,0.006,0.012,0.024
  (sharded as above): Muon LR x leg LR x momentum x NS steps x schedule (200 configs) and AdamW LR
  x leg LR (30), 3 seeds each, 6 for each arm's three best and their LR neighbours. Seeds 0-1 and
  the near-optimum seeds were trained here (torch 2.13 CPU, one thread per run); seed 2 of the base
  grid (215 runs) in 14 shards on a 16-core x86 host with torch 2.11 (CPU, one thread per run), where
  two committed seed-0 rows retrained as a cross-check differed from the table by 2.4e-7 and 6.0e-8;
* benchmarks/data/replay_tiny.csv, for muon_vs_adamw_wen (the old default: Muon's leg tied at
  0.1x its LR), built before this grid existed (Muon LRs 1.93x apart over [3e-3, 1.12], momentum
  {0.8, 0.875, 0.95}, NS steps {3, 5, 8}, fixed or linear 0.85 over 30 steps; about 50 CPU minutes).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from research_agents.config import Param, Study, load_study  # noqa: E402
from research_agents.execution.replay import CURVE, RESULT_COLUMNS  # noqa: E402
from trainer.spec import TrialSpec  # noqa: E402
from trainer.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "data" / "replay_tiny.csv"
LRS = ("lr", "adamw_lr")  # recorded for every arm (the leg's LR as trained, tied or not)
TOP = 3  # best configs per arm that get the extra seeds


def grid(param: Param, n: int) -> list[Any]:
    """n points of a knob's range (log-spaced where the space is log; the middle when n is 1)."""
    if param.type == "choice":
        return list(param.choices)
    lo, hi = param.low, param.high
    if n == 1:
        fracs = [0.5]
    else:
        fracs = [i / (n - 1) for i in range(n)]
    if param.log:
        values = [lo * (hi / lo) ** f for f in fracs]
    else:
        values = [lo + (hi - lo) * f for f in fracs]
    out = [int(round(v)) if param.type == "int" else float(f"{v:.4g}") for v in values]
    return list(dict.fromkeys(out))


def default_points(param: Param) -> int:
    if param.when:
        return 1
    return 8 if param.log else 3


def arm_configs(space: dict[str, Param], points: dict[str, int],
                values_of: dict[str, list[Any]] | None = None) -> list[dict]:
    """Every grid point of one arm's space, conditional knobs only where their condition holds."""
    configs: list[dict] = [{}]
    for key, param in space.items():
        values = (values_of or {}).get(key) or grid(param, points.get(key, default_points(param)))
        nxt = []
        for cfg in configs:
            if all(cfg.get(dep) in allowed for dep, allowed in param.when.items()):
                nxt += [{**cfg, key: v} for v in values]
            else:
                nxt.append(cfg)
        configs = nxt
    return configs


def columns(study: Study) -> list[str]:
    knobs = [k for arm in study.arms.values() for k in arm.space if k not in LRS]
    return ["arm", *LRS, *dict.fromkeys(knobs), *[c for c in RESULT_COLUMNS if c != "arm"]]


def _text(value: Any) -> str:
    """One spelling of a cell for resume keys: numbers by value, blanks as ''."""
    if value is None or value == "":
        return ""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


def row_key(cols: list[str], row: dict) -> tuple:
    return tuple(_text(row.get(c)) for c in cols if c not in RESULT_COLUMNS or c in ("arm", "seed"))


def run_one(study: Study, arm: str, params: dict, seed: int, cols: list[str]) -> dict:
    spec: TrialSpec = study.trial_spec(arm, params, seed=seed, overrides={"device": "cpu"})
    m = train(spec)
    hist = {h.step: h.val_loss for h in m.history if h.val_loss is not None}
    at = {q: hist.get(math.ceil(spec.steps * q / 100)) for q in CURVE}
    return {**dict.fromkeys(cols, ""), **params, "arm": spec.optimizer, "lr": spec.lr, "adamw_lr": spec.leg_lr,
            "seed": seed, "status": m.status, "val_loss": m.final.val_loss,
            "val_accuracy": m.final.val_accuracy, "train_loss": m.final.train_loss,
            **{f"loss_{q}": at[q] for q in CURVE},
            "diverged_step": m.optimizer_steps if m.status == "diverged" else "",
            "wall_time_s": round(m.wall_time_s, 3)}


def near_optimum(study: Study, arm: str, configs: list[dict], done: dict[tuple, dict], cols: list[str],
                 seeds: range) -> list[dict]:
    """The arm's TOP best configs by mean val loss over `seeds` (completed runs), and the grid
    neighbours of its best along each log-scaled knob."""
    def mean(cfg: dict) -> float:
        losses = []
        for s in seeds:
            r = done.get(row_key(cols, _row_of(study, arm, cfg, s)))
            if r is not None and r["status"] == "completed" and r["val_loss"] not in ("", None):
                losses.append(float(r["val_loss"]))
        return statistics.fmean(losses) if losses else math.inf

    ranked = sorted((c for c in configs if mean(c) < math.inf), key=mean)
    if not ranked:
        return []
    best, out = ranked[0], list(ranked[:TOP])
    for key, param in study.arms[arm].space.items():
        if not param.log or key not in best:
            continue
        line = sorted((c for c in configs if {k: v for k, v in c.items() if k != key} ==
                       {k: v for k, v in best.items() if k != key}), key=lambda c: c[key])
        i = line.index(best)
        out += [line[j] for j in (i - 1, i + 1) if 0 <= j < len(line)]
    return [c for i, c in enumerate(out) if c not in out[:i]]


def _row_of(study: Study, arm: str, params: dict, seed: int) -> dict:
    """The key cells of a config's row before it is trained (the spec's LRs, the params, the seed)."""
    spec = study.trial_spec(arm, params, seed=seed)
    return {**params, "arm": spec.optimizer, "lr": spec.lr, "adamw_lr": spec.leg_lr, "seed": seed}


def parse_points(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        key, sep, n = item.partition("=")
        if not sep or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--points: expected KNOB=N with N >= 1, got {item!r}")
        out[key] = int(n)
    return out


def parse_values(items: list[str], study: Study) -> dict[str, dict[str, list[Any]]]:
    """`[ARM:]KNOB=V1,V2,...` as {arm: {knob: values}} (typed by the knob's space, checked in it)."""
    out: dict[str, dict[str, list[Any]]] = {arm: {} for arm in study.arms}
    for item in items:
        target, sep, text = item.partition("=")
        arm, colon, key = target.rpartition(":")
        arms = [arm] if colon else [a for a, spec in study.arms.items() if key in spec.space]
        if not sep or not text or not arms or any(a not in study.arms or key not in study.arms[a].space
                                                  for a in arms):
            raise SystemExit(f"--values: expected [ARM:]KNOB=V1,V2 for a searched knob, got {item!r}")
        for a in arms:
            param = study.arms[a].space[key]
            try:
                vals = [v if param.type == "choice" else int(v) if param.type == "int" else float(v)
                        for v in text.split(",")]
            except ValueError:
                raise SystemExit(f"--values: {item!r} has a value that is not a number") from None
            bad = [v for v in vals if param.check(v) is not None]
            if bad:
                raise SystemExit(f"--values: {a}:{key}={bad[0]!r}: {param.check(bad[0])}")
            out[a][key] = vals
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="muon_vs_adamw", help="study name in experiments/ or a TOML file")
    ap.add_argument("--scale", help="one of the study's scales (default: the study as written)")
    ap.add_argument("--points", nargs="*", default=[], metavar="KNOB=N", help="grid points of a knob")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 for every config (default 3)")
    ap.add_argument("--extra-seeds", type=int, default=3, help="more seeds near each optimum (default 3)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--values", nargs="*", default=[], metavar="[ARM:]KNOB=V1,V2", help="a knob's grid points")
    ap.add_argument("--limit", type=int, default=None, help="train at most N new runs (then stop)")
    ap.add_argument("--shard", default="0/1", metavar="K/N", help="train every N-th base run from the K-th "
                    "(no extra seeds); see the module's docstring")
    args = ap.parse_args(argv)
    try:
        study = load_study(args.study, ROOT / "experiments")
        if args.scale:
            study = study.for_scale(args.scale)
    except ValueError as err:
        raise SystemExit(f"make_replay_table: {err}") from None
    points = parse_points(args.points)
    unknown = sorted(set(points) - {k for arm in study.arms.values() for k in arm.space})
    if unknown:
        raise SystemExit(f"--points: {unknown[0]!r} is not searched by study {study.name}")
    values_of = parse_values(args.values, study)
    k_text, _, n_text = args.shard.partition("/")
    if not (k_text.isdigit() and n_text.isdigit() and int(k_text) < int(n_text)):
        raise SystemExit(f"--shard: expected K/N with 0 <= K < N, got {args.shard!r}")
    shard, shards = int(k_text), int(n_text)
    torch.set_num_threads(1)
    cols = columns(study)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done: dict[tuple, dict] = {}
    if args.out.is_file():
        with args.out.open() as fh:
            reader = csv.DictReader(fh)
            if list(reader.fieldnames or []) != cols:
                raise SystemExit(f"{args.out}: its columns are not this study's ({', '.join(cols)}); "
                                 "write to a new file")
            done = {row_key(cols, r): r for r in reader}
    fresh = not args.out.is_file()
    grids = {arm: arm_configs(a.space, points, values_of[arm]) for arm, a in study.arms.items()}
    trained, started, index = 0, time.perf_counter(), -1
    with args.out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, cols)
        if fresh:
            writer.writeheader()

        def todo(arm: str, configs: list[dict], seeds) -> bool:
            nonlocal trained, index
            for seed, cfg in itertools.product(seeds, configs):
                index += 1
                if index % shards != shard:
                    continue
                k = row_key(cols, _row_of(study, arm, cfg, seed))
                if k in done:
                    continue
                if args.limit is not None and trained >= args.limit:
                    return False
                row = run_one(study, arm, cfg, seed, cols)
                writer.writerow(row)
                fh.flush()
                done[k] = {c: "" if v is None else str(v) for c, v in row.items()}
                trained += 1
                print(f"[{trained} new, {time.perf_counter() - started:.0f}s] {arm} {cfg} seed {seed}: "
                      f"{row['status']} {row['val_loss']}", flush=True)
            return True

        base = range(args.seeds)
        ok = all([todo(arm, configs, base) for arm, configs in grids.items()])
        base_done = all(row_key(cols, _row_of(study, arm, cfg, seed)) in done
                        for arm, configs in grids.items() for cfg in configs for seed in base)
        if ok and (shards == 1 or base_done):
            extra = range(args.seeds, args.seeds + args.extra_seeds)
            for arm, configs in grids.items():
                ok = todo(arm, near_optimum(study, arm, configs, done, cols, base), extra) and ok
    print(f"{len(done)} rows in {args.out} ({trained} trained now; "
          f"{sum(len(c) for c in grids.values())} grid configs x {args.seeds} seeds, then more near each optimum)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
