"""Command line: run | report | status | list.

Exit codes: 0 success, 2 bad input (one line naming what is wrong, nothing written), 1 anything
else (an interrupted run included: its report is written and `run` again resumes it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rich.console import Console

from trainer.presets import RUN_PRESETS

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2
RUN_FILE = "run.json"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every other bad input
        raise UsageError(message)


def experiments_dir() -> Path:
    env = os.environ.get("RESEARCH_AGENTS_EXPERIMENTS")
    if env:
        return Path(env)
    here = Path.cwd() / "experiments"
    return here if here.is_dir() else Path(__file__).resolve().parents[1] / "experiments"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from research_agents.planners import PLANNERS

    parser = _Parser(prog="research-agents", description="Optimizer research that runs itself.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="plan, train, analyse and report until the budget is spent")
    run.add_argument("--budget", type=_positive, default=20, help="training runs, confirmation included")
    run.add_argument("--study", default="muon_vs_adamw", help="study name in experiments/ or a TOML file")
    run.add_argument("--planner", default="auto", choices=PLANNERS)
    run.add_argument("--out", help="run directory (default experiments/runs/<study>); reused = resumed")
    run.add_argument("--preset", choices=sorted(RUN_PRESETS), help="override the study's preset")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where trials train")
    run.add_argument("--seeds", type=_positive, help="fresh confirmation seeds per leader (>= 2)")
    run.add_argument("--storage", help="SQLAlchemy URL of the trial database (default: sqlite in --out)")
    run.add_argument("--grid", help='manual grid, e.g. "lr=0.01,0.02 momentum=0.9,0.95"')
    report = sub.add_parser("report", help="rebuild the reports of a run directory from its store")
    report.add_argument("out")
    status = sub.add_parser("status", help="print the trials table of a run directory")
    status.add_argument("out")
    sub.add_parser("list", help="list the studies in experiments/")
    return parser


def main(argv: list[str] | None = None) -> int:
    console = Console(soft_wrap=True)  # long lines stay whole in logs and pipes
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as e:  # --help
        return int(e.code or 0)
    try:
        if args.command == "list":
            return cmd_list(console)
        if args.command == "run":
            return cmd_run(args, console)
        return cmd_report(args, console) if args.command == "report" else cmd_status(args, console)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


# ------------------------------------------------------------------ list / status / report


def cmd_list(console: Console) -> int:
    from rich.table import Table

    from research_agents.specs import load_study

    table = Table(title=f"studies in {experiments_dir()}")
    for col in ("study", "preset", "arms", "question"):
        table.add_column(col)
    for path in sorted(experiments_dir().glob("*.toml")):
        try:
            s = load_study(path)
            table.add_row(s.name, s.preset, ", ".join(s.arms), s.question)
        except ValueError as e:
            table.add_row(path.stem, "-", "-", f"[red]invalid: {e}[/red]")
    console.print(table)
    return EXIT_OK


def _open_run(out_text: str):
    """Study and store of an existing run directory (UsageError if it is not one)."""
    from research_agents.specs import Study
    from research_agents.store import OptunaStore

    out = Path(out_text)
    run_file = out / RUN_FILE
    if not run_file.is_file():
        raise UsageError(f"{out} is not a run directory (no {RUN_FILE})")
    saved = json.loads(run_file.read_text())
    study = Study.model_validate(saved["study"])
    store = OptunaStore.for_dir(out, study.name, {a: arm.space for a, arm in study.arms.items()},
                                url=saved.get("storage"))
    return out, saved, study, store


def cmd_status(args, console: Console) -> int:
    from research_agents.console import trials_table

    out, saved, study, store = _open_run(args.out)
    records = store.records()
    console.print(trials_table(records, title=f"{study.name}: {len(records)} trials"))
    return EXIT_OK


def cmd_report(args, console: Console) -> int:
    from research_agents.loop import make_plan

    out, saved, study, store = _open_run(args.out)
    plan = make_plan(study, saved["budget"], saved.get("confirm_seeds"))
    findings = _final_report(out, study, plan, store, saved)
    console.print(f"report: {out / 'report.md'} ({findings.recommendation.confidence} confidence)")
    return EXIT_OK


# ------------------------------------------------------------------ run


def cmd_run(args, console: Console) -> int:
    from research_agents.loop import BadInput, make_plan
    from research_agents.planners import make_planner
    from research_agents.specs import load_study

    try:
        study = load_study(args.study, experiments_dir())
        planner, planner_line = make_planner(args.planner, study, args.grid)
        plan = make_plan(study, args.budget, args.seeds)
    except (ValueError, BadInput) as e:
        raise UsageError(str(e)) from None
    if args.seeds is not None and args.seeds < 2:
        raise UsageError("--seeds must be at least 2: one seed measures no noise")
    out = Path(args.out) if args.out else experiments_dir() / "runs" / study.name
    overrides = {"device": args.device} if args.device else {}
    preset = args.preset or study.preset
    try:  # every point of the run must make a valid trial spec before anything is written
        for arm in study.arms:
            study.trial_spec(arm, {}, seed=0, preset=preset, overrides=overrides)
    except ValueError as e:
        raise UsageError(f"--preset {preset}: {e}") from None

    saved = {"study": study.model_dump(mode="json"), "budget": args.budget, "confirm_seeds": args.seeds,
             "preset": preset, "overrides": overrides, "planner": planner.name, "storage": args.storage}
    run_file = out / RUN_FILE
    if run_file.is_file():
        before = json.loads(run_file.read_text())
        keep = ("arms", "base", "seeds", "comparisons", "points")
        if any(before["study"].get(k) != saved["study"].get(k) for k in keep) or before.get("preset") != preset:
            raise UsageError(f"{out} holds a run of a different study definition or preset; "
                             "use another --out or the same study file")
        if args.storage is None:
            saved["storage"] = before.get("storage")
    return _run(study, plan, planner, planner_line, out, saved, preset, overrides, console)


def _run(study, plan, planner, planner_line, out: Path, saved: dict, preset, overrides, console) -> int:
    from research_agents.console import RunDisplay
    from research_agents.executor import LocalExecutor, TrialInterrupted
    from research_agents.loop import LoopHooks, ResearchLoop
    from research_agents.reports import write_round_report
    from research_agents.store import OptunaStore

    out.mkdir(parents=True, exist_ok=True)
    store = OptunaStore.for_dir(out, study.name, {a: arm.space for a, arm in study.arms.items()},
                                url=saved["storage"])
    (out / RUN_FILE).write_text(json.dumps(saved, indent=1))
    console.print(f"[bold]{study.name}[/bold]: {study.question}")
    console.print(planner_line, markup=False)
    console.print(f"budget {plan.budget} runs: search {plan.search_budget} "
                  f"({', '.join(f'{a} {n}' for a, n in plan.search_share.items())}), confirmation "
                  f"{plan.budget - plan.search_budget} on seeds {plan.confirm_seeds}; out: {out}", markup=False)
    records = store.records()
    display = RunDisplay(console, plan.budget, records)

    def round_end(round_no, round_records):
        return write_round_report(out, study, round_no, round_records, store.records(), plan)

    hooks = LoopHooks(on_trial_start=display.trial_start, on_progress=display.progress,
                      on_trial_end=display.trial_end, on_round_end=round_end, on_message=display.message)
    loop = ResearchLoop(study, store, LocalExecutor(), planner, out, plan, overrides, preset, hooks)
    interrupted = False
    try:
        with display:
            loop.run()
    except (TrialInterrupted, KeyboardInterrupt):
        interrupted = True
    findings = _final_report(out, study, plan, store, saved)
    console.print(f"recommendation ({findings.recommendation.confidence} confidence): "
                  f"{findings.recommendation.text}", markup=False)
    console.print(f"report: {out / 'report.md'}", markup=False)
    if interrupted:
        console.print("interrupted: the running trial is marked interrupted; run the same command to resume",
                      markup=False)
        return EXIT_FAIL
    return EXIT_OK


def _final_report(out: Path, study, plan, store, saved: dict):
    from research_agents.executor import read_metrics
    from research_agents.reports import setup_from_metrics, write_final_report

    records = store.records()
    extra = {"planner": saved.get("planner"), "budget": plan.budget, "confirmation_seeds": plan.confirm_seeds,
             "storage": "external database" if saved.get("storage") else "sqlite in the run directory"}
    metrics = next((m for r in records if r.ok and (m := read_metrics(out / r.run_dir))), None)
    setup = setup_from_metrics(metrics, study, saved.get("preset"), **extra) if metrics else extra
    study_arg = saved["study"]["name"]
    commands = [f"python -m research_agents run --study {study_arg} --budget {plan.budget} "
                f"--planner {saved.get('planner', 'auto')} --out {out}",
                f"python -m research_agents report {out}"]
    best = min((r for r in records if r.ok), key=lambda r: r.val_loss, default=None)
    if best:
        commands.append(f"python -m trainer run --spec {out / best.run_dir / 'spec.json'} --out /tmp/best-trial")
    return write_final_report(out, study, plan, records, setup, commands)


if __name__ == "__main__":
    sys.exit(main())
