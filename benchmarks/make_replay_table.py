"""Build the replay table: real CPU trials of the default study's preset over a dense grid.

    python -m benchmarks.make_replay_table [--out benchmarks/data/replay_tiny.csv] [--limit N]

Every row is one real training run of `trainer.train` (preset "tiny": the default study's CPU
scale), in this process, on one thread (as the loop's executor runs trials). The grid:

* AdamW: 12 log-spaced LRs over the default study's space [1e-4, 3e-2];
* Muon: 10 log-spaced LRs over [3e-3, 1.12] (factor 1.93 apart) x momentum {0.8, 0.875, 0.95} x Newton-Schulz steps
  {3, 5, 8} x momentum schedule {fixed, linear 0.85 -> momentum over 30 steps}; the AdamW leg
  (embedding, norms) at 0.1 x the Muon LR, as the default study ties it;
* seeds 0, 1, 2 for every config, then seeds 3..5 more for each arm's three best LRs (around each
  optimum, where the noise decides rankings).

The run is resumable: rows already in the output file are kept and not trained again. The
replay executor (`--executor replay:FILE`) answers trials from this table.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from trainer.presets import RUN_PRESETS  # noqa: E402
from trainer.spec import TrialSpec  # noqa: E402
from trainer.train import train  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "replay_tiny.csv"
COLUMNS = ["arm", "lr", "adamw_lr", "momentum", "momentum_schedule.kind", "momentum_schedule.start",
           "momentum_schedule.warmup_steps", "ns_steps", "seed", "status", "val_loss", "val_accuracy",
           "train_loss", "loss_25", "loss_50", "loss_75", "loss_100", "diverged_step", "wall_time_s"]
MUON_TIE = 0.1  # the default study's AdamW-leg LR = 0.1 x the Muon LR
WARMUP = {"momentum_schedule.kind": "linear", "momentum_schedule.start": 0.85,
          "momentum_schedule.warmup_steps": 30}


def log_grid(low: float, high: float, n: int) -> list[float]:
    return [float(f"{low * (high / low) ** (i / (n - 1)):.4g}") for i in range(n)]


def adamw_configs() -> list[dict]:
    return [{"arm": "adamw", "lr": lr} for lr in log_grid(1e-4, 3e-2, 12)]


def muon_configs() -> list[dict]:
    out = []
    lrs = log_grid(3e-3, 0.3, 8)
    lrs += [float(f"{lrs[-1] * (lrs[-1] / lrs[-2]) ** k:.4g}") for k in (1, 2)]  # the tie needs room above 0.3
    for lr, mom, ns, sched in itertools.product(lrs, (0.8, 0.875, 0.95), (3, 5, 8),
                                                ("fixed", "linear")):
        cfg = {"arm": "muon", "lr": lr, "momentum": mom, "ns_steps": ns, "momentum_schedule.kind": sched}
        if sched == "linear":
            cfg.update(WARMUP)
        out.append(cfg)
    return out


def spec_for(cfg: dict, seed: int) -> TrialSpec:
    import json

    spec = json.loads(json.dumps(RUN_PRESETS["tiny"]))
    spec.update(seed=seed, weight_decay=0.1, device="cpu", lr=cfg["lr"])
    if cfg["arm"] == "adamw":
        spec.update(optimizer="adamw", adamw_betas=[0.9, 0.95])
    else:
        sched = {"kind": cfg["momentum_schedule.kind"]}
        if sched["kind"] == "linear":
            sched.update(start=cfg["momentum_schedule.start"], warmup_steps=cfg["momentum_schedule.warmup_steps"])
        spec.update(optimizer="muon", adamw_lr=round(MUON_TIE * cfg["lr"], 8), momentum=cfg["momentum"],
                    ns_steps=cfg["ns_steps"], momentum_schedule=sched)
    return TrialSpec.model_validate(spec)


def key(cfg: dict, seed: int) -> tuple:
    return (cfg["arm"], float(cfg["lr"]), float(cfg.get("momentum") or 0), int(cfg.get("ns_steps") or 0),
            cfg.get("momentum_schedule.kind") or "", int(seed))


def row_key(row: dict) -> tuple:
    return (row["arm"], float(row["lr"]), float(row["momentum"] or 0), int(row["ns_steps"] or 0),
            row["momentum_schedule.kind"], int(row["seed"]))


def run_one(cfg: dict, seed: int) -> dict:
    spec = spec_for(cfg, seed)
    m = train(spec)
    hist = [h for h in m.history if h.val_loss is not None]
    at = {}
    for q in (25, 50, 75, 100):
        step = math.ceil(spec.steps * q / 100)
        hit = [h.val_loss for h in hist if h.step == step]
        at[q] = hit[0] if hit else None
    return {**{c: "" for c in COLUMNS}, **cfg, "adamw_lr": spec.adamw_lr if cfg["arm"] == "muon" else "",
            "seed": seed, "status": m.status, "val_loss": m.final.val_loss,
            "val_accuracy": m.final.val_accuracy, "train_loss": m.final.train_loss,
            "loss_25": at[25], "loss_50": at[50], "loss_75": at[75], "loss_100": at[100],
            "diverged_step": m.optimizer_steps if m.status == "diverged" else "",
            "wall_time_s": round(m.wall_time_s, 3)}


def best_lrs(rows: list[dict], arm: str, n: int = 3) -> list[dict]:
    """The arm's n best configs by mean val loss over seeds 0-2 (completed runs only)."""
    by: dict[tuple, list[float]] = {}
    cfgs: dict[tuple, dict] = {}
    for r in rows:
        if r["arm"] != arm or r["status"] != "completed" or int(r["seed"]) > 2:
            continue
        k = row_key(r)[:5]
        by.setdefault(k, []).append(float(r["val_loss"]))
        cfgs[k] = {c: r[c] for c in ("arm", "lr", "momentum", "ns_steps", "momentum_schedule.kind",
                                     "momentum_schedule.start", "momentum_schedule.warmup_steps") if r[c] != ""}
    ranked = sorted(by, key=lambda k: sum(by[k]) / len(by[k]))
    out = []
    for k in ranked[:n]:
        c = dict(cfgs[k])
        c["lr"] = float(c["lr"])
        for f in ("momentum",):
            if f in c:
                c[f] = float(c[f])
        for f in ("ns_steps", "momentum_schedule.warmup_steps"):
            if f in c:
                c[f] = int(c[f])
        if "momentum_schedule.start" in c:
            c["momentum_schedule.start"] = float(c["momentum_schedule.start"])
        out.append(c)
    return out


def near_optimum(rows: list[dict], arm: str, grid: list[dict]) -> list[dict]:
    """The arm's three best configs and the LR-grid neighbours of its best one."""
    top = best_lrs(rows, arm)
    if not top:
        return []
    best = top[0]
    same = [c for c in grid if {k: v for k, v in c.items() if k != "lr"} == {k: v for k, v in best.items() if k != "lr"}]
    lrs = sorted(c["lr"] for c in same)
    i = min(range(len(lrs)), key=lambda j: abs(math.log(lrs[j] / best["lr"])))
    extra = [c for c in same if c["lr"] in (lrs[max(0, i - 1)], lrs[min(len(lrs) - 1, i + 1)])]
    out = []
    for c in top + extra:
        if key(c, 0) not in {key(o, 0) for o in out}:
            out.append(c)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--limit", type=int, default=None, help="train at most N new runs (then stop)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    if args.out.is_file():
        with args.out.open() as fh:
            rows = list(csv.DictReader(fh))
    done = {row_key(r) for r in rows}
    fresh = not args.out.is_file()
    fh = args.out.open("a", newline="")
    writer = csv.DictWriter(fh, COLUMNS)
    if fresh:
        writer.writeheader()
    trained = 0
    started = time.perf_counter()

    def todo_pass(configs, seeds):
        nonlocal trained
        for seed in seeds:
            for cfg in configs:
                if key(cfg, seed) in done:
                    continue
                if args.limit is not None and trained >= args.limit:
                    return False
                row = run_one(cfg, seed)
                writer.writerow(row)
                fh.flush()
                rows.append({k: ("" if v is None else str(v)) for k, v in row.items()})
                done.add(key(cfg, seed))
                trained += 1
                print(f"[{trained} new, {time.perf_counter() - started:.0f}s] {cfg} seed {seed}: "
                      f"{row['status']} {row['val_loss']}", flush=True)
        return True

    ok = todo_pass(adamw_configs() + muon_configs(), (0, 1, 2))
    if ok:
        for arm, grid in (("adamw", adamw_configs()), ("muon", muon_configs())):
            ok = todo_pass(near_optimum(rows, arm, grid), (3, 4, 5)) and ok
    fh.close()
    print(f"{len(rows)} rows in {args.out} ({trained} trained now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
