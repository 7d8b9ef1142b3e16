"""How good is each planner's answer? The real loop, store, analysis and round reports, trials
answered from the replay table (benchmarks/data/replay_fair.csv: real CPU runs of the default
study; `--study experiments/muon_vs_adamw_wen.toml --table benchmarks/data/replay_tiny.csv` for
the old one), many repetitions per planner and budget.

    python -m benchmarks.planner_efficiency [--reps 30] [--budgets 20 40] [--planners grid random tpe policy]
                                            [--table benchmarks/data/replay_fair.csv] [--json out.json]
    python -m benchmarks.planner_efficiency --planners hybrid llm --reps 10 --budgets 20

Per planner and budget it prints:
* regret per arm: the table's mean val loss of the arm's recommended (confirmed-leader) config
  minus the table's best config of that arm (median and 90th percentile over repetitions);
* "within 2 sd": share of repetitions with the arm's recommendation within 2 seed-noise sd (the sd
  over seeds of that arm's best table config) of its best;
* "assignments missed": of the distinct seed assignments the repetitions replay (ReplayExecutor.
  seed_assignment: the order of the table's seeds, drawn from the repetition's seed; with 3 common
  seeds and 3 extra near each optimum, 30 repetitions replay 20), in how many the arm missed in some
  repetition. The repetitions are not all independent: the policy's runs depend on the assignment
  and, through its TPE fill, on the repetition's seed; where the fill does not decide, its shares
  move in steps of about one assignment;
* "verdict ok": share whose paired verdict (which arm is better, or no evidence) matches the
  table's own paired verdict between the arms' best configs;
* "wrong+confident": share with a wrong verdict stated with moderate or high confidence;
* "tuned": share where every arm's LR ended bracketed; confidence shares;
* "by how much": the table's own 2x2 between the arms' best configs (optimizer, shared-settings and
  interaction effects) is printed first; per repetition the study's answer (the optimizer effect of
  its swap runs' 2x2, else its confirmed gap) and the share within +-50% of the table's optimizer
  effect ("effect +-50%"), and the share whose answer was a measured 2x2 ("2x2 measured");
* planner+analysis time per trial (everything but the replayed trials themselves).
`policy-rungs` is the default policy with its search runs stopped at rungs (`run --rungs`, and
`--rungs-late LATE` as `run --rungs-late`,
research_agents/rungs.py) at the same `--budget` in full-length-run equivalents (equal compute); its
row adds the trials it made, how many stopped early, and how often the table's best configuration of
an arm was among them ("best stopped").
The grid baseline is a manual LR grid (6 log-spaced LRs over each arm's space, other knobs at
the arm's start point), run in ascending order as a user would write it.

`hybrid` and `llm` talk over real HTTP, through the official openai client, to a deterministic
scripted stand-in for the model (benchmarks/llm_standin.py behind tests/openai_stub.py's
StubLLM: it brackets what the prompt's evidence says is open, replicates close calls, else tries
a point near the leader), so their rows measure the planners' machinery with sensible answers,
not a real model's judgement; they add a line per planner on the LLM's actions.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from research_agents.actions import Proposal
from research_agents.analysis import stats
from research_agents.analysis.fairness import swap_pairs
from research_agents.analysis.findings import analyze
from research_agents.argtypes import number
from research_agents.config import load_study, make_plan
from research_agents.execution.replay import ReplayExecutor
from research_agents.loop import LoopHooks, ResearchLoop
from research_agents.planners import GridPlanner, SamplerPlanner
from research_agents.planners.policy import PolicyPlanner
from research_agents.report.round import write_round_report
from research_agents.rungs import FACTOR
from research_agents.store import OptunaStore

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "data" / "replay_fair.csv"


class TimedReplay(ReplayExecutor):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.spent_s = 0.0

    def run(self, *a, **k):
        t = time.perf_counter()
        try:
            return super().run(*a, **k)
        finally:
            self.spent_s += time.perf_counter() - t


def grid_planner(study) -> GridPlanner:
    points = []
    for arm, a in study.arms.items():
        p = a.space["lr"]
        for i in range(6):
            lr = float(f"{p.low * (p.high / p.low) ** ((i + 0.5) / 6):.4g}")
            points.append(Proposal(arm=arm, params={**(a.start or {}), "lr": lr}, origin="grid",
                                   rationale="manual LR grid"))
    return GridPlanner(points)


_STANDIN = None  # the scripted model's server, started on first use


def standin_url() -> str:
    global _STANDIN
    if _STANDIN is None:
        from benchmarks.llm_standin import reply
        from tests.openai_stub import StubLLM

        _STANDIN = StubLLM(default=reply, model="standin").start()
    return _STANDIN.base_url


def make_llm(planner: str, study, rep: int):
    from research_agents.planners.hybrid import HybridPlanner
    from research_agents.planners.llm import LLMPlanner
    from research_agents.planners.llm_client import LLMConfig

    s = study.planner
    llm = LLMPlanner(LLMConfig(base_url=standin_url(), model="standin", configured=True), rep, s.tpe_startup_trials)
    return llm if planner == "llm" else HybridPlanner(llm, s.llm_share, s.llm_warmup_trials)


def llm_stats(planner) -> dict | None:
    """The LLM's actions in one run (None for a planner without an LLM)."""
    llm = getattr(planner, "llm", planner)
    if not hasattr(llm, "calls"):
        return None
    ok = [c for c in llm.calls if c.get("ok")]
    kinds: dict[str, int] = {}
    for c in ok:
        for kind, n in (c.get("kinds") or {}).items():
            kinds[kind] = kinds.get(kind, 0) + n
    return {"calls": len(llm.calls), "accepted": sum(c.get("accepted", 0) for c in ok),
            "rejected": sum(c.get("rejected", 0) for c in ok), "kinds": kinds,
            "latency_s": sum(c.get("latency_s") or 0.0 for c in llm.calls)}


def make(planner: str, study, rep: int):
    if planner in ("hybrid", "llm"):
        return make_llm(planner, study, rep)
    if planner == "grid":
        return grid_planner(study)
    if planner in ("random", "tpe"):
        return SamplerPlanner(planner, rep, study.planner.tpe_startup_trials)
    if planner in ("policy", "policy-rungs"):  # policy-rungs: the same policy, search runs stopped at rungs
        return PolicyPlanner(rep, study.planner.tpe_startup_trials)
    raise ValueError(planner)


def truth(executor: ReplayExecutor, study) -> dict:
    """Per arm: every table config's mean over seeds, the best one and its seed sd; the paired verdict."""
    arms = {}
    for arm in study.arms:
        opt = study.arms[arm].base.get("optimizer", arm)
        mine = {k: rows for k, rows in executor.table.items() if k[0] == opt}
        enough = min(2, max(len(rows) for rows in mine.values()))  # (a config with one seed has no noise)
        configs = {k: rows for k, rows in mine.items() if len(rows) >= enough}
        means = {k: statistics.fmean(r.val_loss for r in rows if r.val_loss is not None) for k, rows in configs.items()}
        best = min(means, key=means.get)
        sd = statistics.stdev([r.val_loss for r in configs[best]])
        arms[arm] = {"means": means, "best": best, "best_mean": means[best], "sd": sd,
                     "seeds": {r.seed: r.val_loss for r in configs[best]}}
    (a, b) = study.comparisons[0] if study.comparisons else list(study.arms)[:2]
    comp = stats.compare_paired(arms[a]["seeds"], arms[b]["seeds"], name_a=a, name_b=b,
                                min_effect=2 * max(arms[a]["sd"], arms[b]["sd"]))
    winner = {"b better": b, "a better": a}.get(comp.verdict)
    return {"arms": arms, "winner": winner, "verdict": comp.verdict, "diff": comp.diff, "pair": [a, b],
            "effects": table_effects(executor, arms[a], arms[b])}


SHARED_COLUMNS = ("adamw_lr",)  # the table's shared settings (outside each optimizer's own knobs)


def table_effects(executor: ReplayExecutor, ta: dict, tb: dict) -> dict | None:
    """The table's own 2x2 between the arms' best configs (arm a's and b's best, each also with the
    other's shared settings: the AdamW leg's LR), from the table's means over seeds: the gap b - a,
    the optimizer effect (b's optimizer minus a's, averaged over both shared settings), the
    shared-settings effect (b's settings minus a's, averaged over both optimizers) and their
    interaction. None when a swapped cell is not in the table."""
    def swapped(key: tuple, other: tuple) -> tuple:
        cfg, theirs = dict(executor.table[key][0].config), dict(executor.table[other][0].config)
        cfg.update({k: theirs[k] for k in SHARED_COLUMNS if k in cfg})
        return (key[0], *cfg.values())

    def mean(key: tuple) -> float | None:
        rows = executor.table.get(key)
        losses = [r.val_loss for r in rows or [] if r.val_loss is not None]
        return statistics.fmean(losses) if losses else None

    ka, kb = ta["best"], tb["best"]
    cells = {"a": mean(ka), "b": mean(kb), "a_with_b_settings": mean(swapped(ka, kb)),
             "b_with_a_settings": mean(swapped(kb, ka))}
    if any(v is None for v in cells.values()):
        return None
    A, B, A2, B2 = cells["a"], cells["b"], cells["a_with_b_settings"], cells["b_with_a_settings"]
    return {"cells": cells, "gap": B - A, "optimizer": ((B - A2) + (B2 - A)) / 2,
            "shared": ((B - B2) + (A2 - A)) / 2, "interaction": ((B - A2) - (B2 - A)) / 2}


def one(planner: str, budget: int, rep: int, study, table: Path, truth_: dict, rungs_late: float | None = None) -> dict:
    study = study.model_copy(update={"planner": study.planner.model_copy(update={"seed": rep})})
    executor = TimedReplay(table, seed=rep, study=study)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        store = OptunaStore.for_study(out, study)
        made = make(planner, study, rep)
        plan = make_plan(study, budget, adaptive=made.sizes_confirmation, swap_pairs=swap_pairs(study))
        plan.rungs = FACTOR if planner == "policy-rungs" else None  # equal compute: --budget in run equivalents
        plan.rungs_late = rungs_late
        hooks = LoopHooks(on_round_end=lambda n, rs: write_round_report(out, study, n, rs, store.records(), plan))
        loop = ResearchLoop(study, store, executor, made, out, plan, {}, None, hooks)
        t = time.perf_counter()
        loop.run()
        fnd = analyze(study, store.records(), plan)
        wall = time.perf_counter() - t
        n_trials = len(store.records())
        stopped = [r for r in store.records() if r.status == "stopped"]
        stopped_keys = [(r.arm, executor.nearest(study.trial_spec(r.arm, r.params, seed=0))) for r in stopped]
        best_stopped = {a: any(arm == a and key == truth_["arms"][a]["best"] for arm, key in stopped_keys)
                        for a in study.arms}
        good_stopped = {a: any(arm == a and truth_["arms"][a]["means"].get(key, math.inf)
                               <= truth_["arms"][a]["best_mean"] + 2 * truth_["arms"][a]["sd"]
                               for arm, key in stopped_keys) for a in study.arms}
    res = {"planner": planner, "budget": budget, "rep": rep, "assignment": executor.seed_assignment(),
           "trials": n_trials, "stopped": len(stopped),
           "best_stopped": any(best_stopped.values()), "good_stopped": any(good_stopped.values()),
           "overhead_s_per_trial": (wall - executor.spent_s) / max(1, n_trials)}
    if (stats := llm_stats(made)) is not None:
        res["llm"] = stats
    [c] = fnd.comparisons
    regret = {}
    for arm, params in ((c.arm_a, c.params_a), (c.arm_b, c.params_b)):
        t_ = truth_["arms"][arm]
        if params is None:
            regret[arm] = None
            continue
        key = executor.nearest(study.trial_spec(arm, params, seed=0))
        regret[arm] = t_["means"].get(key, math.inf) - t_["best_mean"]
    verdict = c.comparison.verdict if c.comparison is not None else "not compared"
    winner = {"b better": c.arm_b, "a better": c.arm_a}.get(verdict)
    effect, measured = reported_effect(fnd, c, truth_["pair"])
    own = (truth_["effects"] or {}).get("optimizer")
    res.update(effect=effect, effect_measured=measured,
               effect_within_50=(effect is not None and own is not None and abs(effect - own) <= 0.5 * abs(own)))
    res.update(regret=regret,
               within=({a: r is not None and r <= 2 * truth_["arms"][a]["sd"] for a, r in regret.items()}),
               verdict=verdict, winner=winner, verdict_ok=winner == truth_["winner"],
               confidence=fnd.recommendation.confidence,
               wrong_confident=winner != truth_["winner"] and fnd.recommendation.confidence in ("moderate", "high"),
               tuned=all(ev.tuned is not False for ev in fnd.tuning.values()))
    return res


def reported_effect(fnd, c, pair: list[str]) -> tuple[float | None, bool]:
    """The study's answer to "by how much", as pair[1] - pair[0] in nats: the optimizer effect of the
    2x2 when the swaps measured it (True), else the confirmed leaders' paired gap (False)."""
    for d in fnd.decompositions:
        opt = d.decomposition.optimizer.mean if d.decomposition is not None else None
        if {d.arm_a, d.arm_b} == set(pair) and opt is not None:  # optimizer: arm_a's minus arm_b's
            return (-opt if d.arm_a == pair[0] else opt), True
    if c.comparison is None or c.comparison.diff is None:
        return None, False
    return (c.comparison.diff if c.arm_a == pair[0] else -c.comparison.diff), False


def summarise(results: list[dict], arms: list[str]) -> list[dict]:
    rows = []
    for (planner, budget) in dict.fromkeys((r["planner"], r["budget"]) for r in results):
        rs = [r for r in results if r["planner"] == planner and r["budget"] == budget]
        row = {"planner": planner, "budget": budget, "reps": len(rs)}
        for a in arms:
            regrets = sorted(r["regret"][a] if r["regret"][a] is not None else math.inf for r in rs)
            row[f"{a}_regret_median"] = statistics.median(regrets)
            row[f"{a}_regret_p90"] = regrets[min(len(regrets) - 1, int(0.9 * len(regrets)))]
            row[f"{a}_within_2sd"] = sum(r["within"][a] for r in rs) / len(rs)
            # the repetitions are not independent: those with one seed assignment replay the same answers
            missed = {r["assignment"] for r in rs if not r["within"][a]}
            row[f"{a}_assignments_missed"] = f"{len(missed)}/{len({r['assignment'] for r in rs})}"
        row["verdict_ok"] = sum(r["verdict_ok"] for r in rs) / len(rs)
        row["wrong_confident"] = sum(r["wrong_confident"] for r in rs) / len(rs)
        row["tuned"] = sum(r["tuned"] for r in rs) / len(rs)
        row["effect_within_50"] = sum(r["effect_within_50"] for r in rs) / len(rs)
        row["effect_measured"] = sum(r["effect_measured"] for r in rs) / len(rs)
        effects = sorted(r["effect"] for r in rs if r["effect"] is not None)
        row["effect_median"] = statistics.median(effects) if effects else None
        for level in ("high", "moderate", "low", "none"):
            row[f"conf_{level}"] = sum(r["confidence"] == level for r in rs) / len(rs)
        row["overhead_ms_per_trial"] = 1000 * statistics.median(r["overhead_s_per_trial"] for r in rs)
        row["trials"] = statistics.fmean(r["trials"] for r in rs)
        row["stopped"] = statistics.fmean(r["stopped"] for r in rs)
        row["best_stopped"] = sum(r["best_stopped"] for r in rs) / len(rs)
        row["good_stopped"] = sum(r["good_stopped"] for r in rs) / len(rs)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--budgets", type=int, nargs="+", default=[20, 40])
    ap.add_argument("--planners", nargs="+", default=["grid", "random", "tpe", "policy"],
                    choices=["grid", "random", "tpe", "policy", "policy-rungs", "hybrid", "llm"])
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--study", default=str(ROOT / "experiments" / "muon_vs_adamw.toml"))
    ap.add_argument("--rungs-late", type=number(0.0, 100.0), default=None,
                    help="policy-rungs: the rung rule's late allowance (default research_agents.rungs.LATE; 0: "
                         "the noise margin alone)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = load_study(args.study)
    t = truth(ReplayExecutor(args.table, study=study), study)
    arms = list(study.arms)
    print(f"table {args.table.name}: " + "; ".join(
        f"{a} best {t['arms'][a]['best'][1:]} mean {t['arms'][a]['best_mean']:.4f} (seed sd {t['arms'][a]['sd']:.4f})"
        for a in arms) + f"; table verdict: {t['verdict']} ({t['winner'] or 'no winner'}, diff {t['diff']:+.4f})")
    if t["effects"] is not None:
        e = t["effects"]
        print(f"table 2x2 ({t['pair'][1]} - {t['pair'][0]}): gap {e['gap']:+.4f} = optimizer {e['optimizer']:+.4f} "
              f"+ shared settings {e['shared']:+.4f} (interaction {e['interaction']:+.4f})")
    results = []
    started = time.perf_counter()
    for budget in args.budgets:
        for planner in args.planners:
            for rep in range(args.reps):
                results.append(one(planner, budget, rep, study, args.table, t, args.rungs_late))
            print(f"  {planner} budget {budget}: {args.reps} reps done ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
    rows = summarise(results, arms)
    assignments = {r["assignment"] for r in results}  # (each repetition's executor says which it replayed)
    print(f"{args.reps} repetitions replay {len(assignments)} distinct seed assignments of the table (the order "
          "of its seeds, drawn from the repetition's seed): the shares move in steps of about "
          f"1/{len(assignments)}")
    head = (["planner", "budget"] + [f"{a} regret med/p90" for a in arms] + [f"{a} within 2sd" for a in arms]
            + [f"{a} assignments missed" for a in arms]
            + ["verdict ok", "wrong+confident", "LR tuned", "conf high/mod/low", "effect median", "effect +-50%",
               "2x2 measured", "ms/trial", "trials (stopped)", "best stopped", "good stopped"])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["planner"], str(r["budget"])]
        cells += [f"{r[f'{a}_regret_median']:.4f} / {r[f'{a}_regret_p90']:.4f}" for a in arms]
        cells += [f"{r[f'{a}_within_2sd']:.0%}" for a in arms]
        cells += [r[f"{a}_assignments_missed"] for a in arms]
        cells += [f"{r['verdict_ok']:.0%}", f"{r['wrong_confident']:.0%}", f"{r['tuned']:.0%}",
                  f"{r['conf_high']:.0%}/{r['conf_moderate']:.0%}/{r['conf_low']:.0%}",
                  "-" if r["effect_median"] is None else f"{r['effect_median']:+.4f}",
                  f"{r['effect_within_50']:.0%}", f"{r['effect_measured']:.0%}",
                  f"{r['overhead_ms_per_trial']:.0f}", f"{r['trials']:.1f} ({r['stopped']:.1f})",
                  f"{r['best_stopped']:.0%}", f"{r['good_stopped']:.0%}"]
        print("| " + " | ".join(cells) + " |")
    for (planner, budget) in dict.fromkeys((r["planner"], r["budget"]) for r in results if "llm" in r):
        rs = [r["llm"] for r in results if r["planner"] == planner and r["budget"] == budget and "llm" in r]
        kinds: dict[str, int] = {}
        for r in rs:
            for kind, n in r["kinds"].items():
                kinds[kind] = kinds.get(kind, 0) + n
        print(f"{planner} budget {budget}, per run (mean of {len(rs)}): {statistics.fmean(r['calls'] for r in rs):.1f} "
              f"LLM calls, {statistics.fmean(r['accepted'] for r in rs):.1f} actions accepted "
              f"({', '.join(f'{k} {n / len(rs):.1f}' for k, n in sorted(kinds.items())) or 'none'}), "
              f"{statistics.fmean(r['rejected'] for r in rs):.1f} rejected")
    if args.json:
        args.json.write_text(json.dumps({"table": str(args.table), "truth": {
            "winner": t["winner"], "verdict": t["verdict"], "diff": t["diff"], "pair": t["pair"],
            "effects": t["effects"],
            "arms": {a: {"best": list(t["arms"][a]["best"]), "best_mean": t["arms"][a]["best_mean"],
                         "sd": t["arms"][a]["sd"]} for a in arms}}, "summary": rows, "runs": results}, indent=1,
            default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
