"""`run`: check the arguments, start (or resume) the run session, run the loop, write the report,
and say how the run ended (`outcome`: the exit code and its line)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from research_agents.argtypes import number, positive, whole
from research_agents.cli.common import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_OK, UsageError, experiments_dir
from research_agents.config.study import MAX_CONFIRM
from research_agents.planners.llm_client import DEFAULT_MODEL, SEND_KEY_ENV, LLMConfig
from research_agents.safefs import write_failure
from trainer.presets import RUN_PRESETS

if TYPE_CHECKING:
    from research_agents.config import Plan, Study
    from research_agents.records import TrialRecord
    from research_agents.session import RunFile, RunSession
    from research_agents.tracking import TrackingOptions


def add_parser(sub: argparse._SubParsersAction) -> None:
    from research_agents.planners import PLANNERS

    run = sub.add_parser("run", help="plan, train, analyse and report until the budget is spent")
    run.add_argument("--budget", type=whole(1), default=None,
                     help="training runs, confirmation included (default 20; a point run: points x seeds)")
    run.add_argument("--study", default="muon_vs_adamw", help="study name in experiments/ or a TOML file")
    run.add_argument("--planner", default="auto", choices=PLANNERS)
    run.add_argument("--out", help="run directory (default experiments/runs/<study>); reused = resumed")
    run.add_argument("--preset", choices=sorted(RUN_PRESETS), help="override the study's preset")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where trials train")
    run.add_argument("--seeds", type=whole(2, MAX_CONFIRM), help="fresh confirmation seeds per leader (>= 2: one "
                     f"seed measures no noise; at most {MAX_CONFIRM})")
    run.add_argument("--storage", help="SQLAlchemy URL of the trial database (default: sqlite in --out)")
    run.add_argument("--grid", help='manual grid, e.g. "lr=0.01,0.02 momentum=0.9,0.95"')
    run.add_argument("--scale", help="the study's scale: seed (its own model, data, steps) or cpu "
                     "(minutes on 2 cores); default seed on CUDA, else cpu")
    run.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                     help="trial spec overrides for every run, e.g. steps=50 data.max_docs=40")
    run.add_argument("--save-model", action="store_true", help="save each trial's model (model.safetensors), and "
                     "keep its last checkpoint")
    run.add_argument("--checkpoint-every", type=whole(1), metavar="STEPS", help="each trial writes a checkpoint "
                     "every STEPS optimizer steps; a trial interrupted (Ctrl-C, a kill) resumes from its last one "
                     "when the run is resumed; removed when the trial ends (unless --save-model)")
    run.add_argument("--executor", default="local", help="how trials run: local (default: each trial its own "
                     "process, forked from a server that has imported torch once), local-cold (a new "
                     "interpreter per trial), ray (Ray tasks: this machine or a cluster, see --ray-address) "
                     "or replay:TABLE (answers from a table of real results, e.g. "
                     "benchmarks/data/replay_fair.csv: a study in seconds)")
    run.add_argument("--workers", type=whole(1), help="trials that train at once (default: one per GPU on CUDA; "
                     "on CPU the cores divided by $OMP_NUM_THREADS, which defaults to 1 per trial; with Ray "
                     "the cluster's GPUs or CPUs); results do not depend on it")
    run.add_argument("--speculate", action=argparse.BooleanOptionalAction, default=True,
                     help="with several workers, train a run the next round will likely make on a worker that "
                     "would sit idle at a round's end; a round that makes it adopts it, one that does not "
                     "throws it away (default: on; results do not depend on it)")
    run.add_argument("--rungs", nargs="?", type=positive(100.0), const=-1.0, default=None, metavar="FACTOR",
                     help="stop a search run at 25/50/75%% of its steps when it is behind its arm's leader there by "
                          "more than FACTOR x the measured seed noise (default factor: research_agents.rungs.FACTOR) "
                          "plus LATE x what the leader still gained from there (--rungs-late); "
                          "leaders, brackets and confirmation stay full-length runs")
    run.add_argument("--rungs-late", type=number(0.0, 100.0), default=None, metavar="LATE",
                     help="with --rungs: widen each rung's margin by LATE x what the leader still gained from that "
                          "rung to its end, for rankings that change late (default: research_agents.rungs.LATE; "
                          "0: the noise margin alone)")
    run.add_argument("--ray-address", help="--executor ray: the cluster to join (auto, or HOST:PORT); default "
                     "a new local Ray on this machine")
    run.add_argument("--track", nargs="+", action="extend", choices=("wandb", "tensorboard", "mlflow"),
                     metavar="BACKEND", help="log each trial's curves and final metrics and the study's summary to "
                     "wandb (offline under OUT/tracking unless WANDB_API_KEY is set), tensorboard and/or mlflow "
                     "(several allowed; a backend that fails is recorded and never fails a trial)")
    run.add_argument("--upload-checkpoints", action="store_true", help="with --track wandb: upload each trial's "
                     "model and last checkpoint to W&B as a model artifact (implies --save-model; offline, "
                     "staged for `wandb sync`)")
    add_llm_arguments(run)  # --llm-base-url, --llm-model, --llm-share, --on-llm-error, ...
    form = run.add_mutually_exclusive_group()
    form.add_argument("--quick", action="store_true", help="run the study's quick experiments")
    form.add_argument("-e", "--experiments", nargs="+", metavar="NAME",
                      help="run these named experiments (names, aliases or group names)")
    form.add_argument("--all", action="store_true", help="run every named experiment")
    form.add_argument("--list", action="store_true", help="list the study's named experiments and exit")


def add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("LLM planner (--planner llm|hybrid, or auto when an endpoint is configured)")
    g.add_argument("--llm-base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 "
                   "(default $OPENAI_BASE_URL, else OpenAI)")
    g.add_argument("--llm-model", help=f"model name (default $OPENAI_MODEL, else {DEFAULT_MODEL})")
    g.add_argument("--llm-share", type=number(0.0, 1.0), help="hybrid: share of points the LLM proposes after the "
                   "warm-up (default: the study's planner.llm_share, 0.3)")
    g.add_argument("--on-llm-error", choices=("stop", "fallback"), default="stop",
                   help="when the LLM service fails after its retries: stop (default; the same command "
                   "resumes) or fall back to the classical planner for the rest of the run")
    g.add_argument("--llm-timeout", type=positive(), help="seconds per request, whole (not per read; default "
                   "300 for a server on this "
                   "machine, 60 for a remote one)")
    g.add_argument("--llm-send-key", action="store_true", help="send OPENAI_API_KEY to --llm-base-url although it is "
                   f"not api.openai.com (or ${SEND_KEY_ENV}=1); never over plain http to another machine")
    g.add_argument("--llm-bad-rounds", type=whole(1), default=2, help="rounds in a row without one valid LLM "
                   "action that count as an LLM failure, handled as --on-llm-error says (default 2)")
    g.add_argument("--llm-tries", type=whole(1), default=3, help="tries per request (default 3)")
    g.add_argument("--llm-backoff", type=number(0.0), default=1.0, help="first wait between tries, doubled each "
                   "time (default 1 s)")
    g.add_argument("--llm-repairs", type=whole(0), default=3, help="corrected batches asked for per round (default 3)")
    g.add_argument("--llm-max-tokens", type=whole(1), default=1024, help="completion tokens per call (default 1024)")
    g.add_argument("--llm-price-in", type=number(0.0), help="USD per 1M prompt tokens "
                   "(or $RESEARCH_AGENTS_LLM_PRICE_IN)")
    g.add_argument("--llm-price-out", type=number(0.0), help="USD per 1M completion tokens "
                   "(or $RESEARCH_AGENTS_LLM_PRICE_OUT)")


def llm_config(args: argparse.Namespace, env: dict[str, str] | None = None) -> LLMConfig:
    """The LLM settings from the parsed flags and the environment (planners.llm_settings)."""
    from research_agents.planners.llm_settings import llm_config as from_flags

    return from_flags(vars(args), env)


# ------------------------------------------------------------------ the command


def command(args: argparse.Namespace, console: Console) -> int:
    """Check every argument, then start (or resume) the session and run it."""
    from research_agents.analysis.fairness import swap_pairs
    from research_agents.config import BadInput, load_study, make_plan, runforms
    from research_agents.execution import make_executor
    from research_agents.planners import make_planner, point_planner
    from research_agents.session import RunFile, check_start

    try:
        study = load_study(args.study, experiments_dir())
        scale = args.scale or runforms.default_scale(study)
        if scale is not None:
            study = study.for_scale(scale)
        if args.list:
            console.print(runforms.listing(study), markup=False, highlight=False)
            return EXIT_OK
        points = runforms.selected_points(study, args.quick, args.experiments, args.all)
        if points is None:
            planner, planner_line = make_planner(args.planner, study, args.grid, llm=llm_config(args))
            plan = make_plan(study, args.budget or runforms.DEFAULT_BUDGET, args.seeds,
                             adaptive=planner.sizes_confirmation, swap_pairs=swap_pairs(study))
            if args.rungs is not None:  # early stops at rungs (research_agents/rungs.py)
                from research_agents.rungs import FACTOR, late_allowance
                plan.rungs = FACTOR if args.rungs < 0 else args.rungs
                plan.rungs_late = late_allowance(args.rungs_late)
            elif args.rungs_late is not None:
                raise ValueError("--rungs-late applies only with --rungs")
        else:
            if args.grid or args.seeds is not None or args.planner not in ("auto", "grid"):
                raise ValueError("named experiments run as defined on the study's seeds: "
                                 "--grid, --planner and --seeds do not apply")
            if args.rungs is not None or args.rungs_late is not None:
                raise ValueError("named experiments run in full: --rungs and --rungs-late do not apply")
            planner, planner_line = point_planner(study, points)
            plan = runforms.point_plan(study, points, args.budget or runforms.point_budget(study, points))
        overrides = runforms.parse_set(args.set)
        if args.upload_checkpoints and "wandb" not in (args.track or []):
            raise ValueError("--upload-checkpoints uploads to W&B: add --track wandb")
    except (ValueError, BadInput) as e:
        raise UsageError(str(e)) from None
    out = Path(args.out) if args.out else experiments_dir() / "runs" / study.name
    overrides.update({"save_checkpoint": True} if args.save_model or args.upload_checkpoints else {})
    overrides.update({"device": args.device} if args.device else {})
    overrides.update({"save_checkpoint_every": args.checkpoint_every} if args.checkpoint_every else {})
    preset = args.preset or study.preset
    try:  # every point of the run must make a valid trial spec, on a device this machine has
        specs = runforms.check_specs(study, points, preset, overrides)
        device = "cuda" if any(s.device == "cuda" for s in specs) else \
            "cpu" if all(s.device == "cpu" for s in specs) else "auto"
        executor = make_executor(args.executor, device=device, ray_address=args.ray_address, study=study)
        if executor.trains_locally:
            runforms.check_devices(specs)
        executor.connect()
        workers = args.workers or executor.default_workers()
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from None

    run = RunFile(study=study, budget=plan.budget, confirm_seeds=args.seeds, preset=preset, overrides=overrides,
                  planner=planner.name, storage=args.storage, scale=scale,
                  experiments=None if points is None else [p.name for p in points], executor=executor.describe(),
                  workers=workers, speculate=args.speculate,
                  llm=planner.public(),  # LLM planners: endpoint and model, never the key
                  rungs=plan.rungs, rungs_late=plan.rungs_late)
    run = check_start(out, run, args.storage)  # (a resume keeps the run's early-stop rule)
    plan.rungs, plan.rungs_late = run.rungs, run.rungs_late
    console.print(f"[bold]{escape(study.name)}[/bold]: {escape(study.question)}")  # user text is never markup
    if executor.trains_locally and (failed := _prepare_data(study, preset, overrides, console)) is not None:
        return failed
    from research_agents.tracking import TrackingOptions

    tracking = TrackingOptions(backends=tuple(args.track or ()), upload_checkpoints=args.upload_checkpoints)
    return _run(run, plan, planner, planner_line, executor, out, console, tracking)


def budget_lines(plan: Plan, study: Study, run: RunFile, out: Path) -> list[str]:
    """What the console says before the first round: the budget split, the trials' executor and
    workers, and a note when a round is too small to use every worker."""
    if plan.adaptive:
        lines = [f"budget {plan.budget} runs: equal search shares per arm; confirmation on 3 to "
                 f"{len(plan.confirm_seeds)} fresh paired seeds per leader (from {plan.confirm_seeds}), as many "
                 f"as the measured noise needs, the rest to the search; out: {out}"]
    else:
        lines = [f"budget {plan.budget} runs: search {plan.search_budget} "
                 f"({', '.join(f'{a} {n}' for a, n in plan.search_share.items())}), confirmation "
                 f"{plan.budget - plan.search_budget} on seeds {plan.confirm_seeds}; out: {out}"]
    if plan.swap_pairs:
        from research_agents.report.decomposition import swap_plan_text

        lines.append(swap_plan_text(plan))
    workers = run.workers or 1
    lines.append(f"trials: {run.executor}, {workers} at a time")
    if workers > study.planner.trials_per_round:
        lines.append(f"note: a round holds {study.planner.trials_per_round} trials, so at most that many of the "
                     f"{workers} workers are busy; raise planner.trials_per_round in the study to use them all "
                     "(a round's size, not the workers, decides what the planner sees)")
    return lines


def _run(run: RunFile, plan: Plan, planner, planner_line: str, executor, out: Path, console: Console,
         tracking: TrackingOptions | None = None) -> int:
    from research_agents.session import started
    from research_agents.signals import stop_raises

    # one run per OUT (the kernel drops the lock however this process ends); outside the loop a stop
    # signal is a KeyboardInterrupt: a second Ctrl-C (or SIGTERM) during the clean-up is one line (cli.main)
    with started(out, run) as session, stop_raises():
        return _run_locked(session, plan, planner, planner_line, executor, console, tracking)


def _tracking(session: RunSession, options: TrackingOptions | None, message):
    """The chosen tracking backends; each failure goes into the store's meta ("tracking_errors")
    and onto the console, and the backend is left out for the rest of the run."""
    from research_agents.tracking import TrackingOptions, make_tracking

    store = session.store

    def failed(backend: str, hook: str, why: str) -> None:
        store.append_meta("tracking_errors", [{"backend": backend, "hook": hook, "error": why}])
        message(f"tracking: {backend} failed in {hook} ({why}); recorded, the run goes on without it")

    return make_tracking(options or TrackingOptions(), session.out, session.study.name, failed)


def _run_locked(session: RunSession, plan: Plan, planner, planner_line: str, executor, console: Console,
                tracking_options: TrackingOptions | None = None) -> int:
    from research_agents.cli.final_report import write_report
    from research_agents.console import RunDisplay
    from research_agents.execution import TrialInterrupted
    from research_agents.loop import LoopHooks, ResearchLoop
    from research_agents.planners.llm_client import LLMUnavailable
    from research_agents.report.plots import TrialPlots
    from research_agents.report.recommendation import recommendation_text
    from research_agents.report.round import write_round_report

    out, study, store, run = session.out, session.study, session.store, session.run
    console.print(planner_line, markup=False)
    for line in budget_lines(plan, study, run, out):
        console.print(line, markup=False)
    records = store.records()
    display = RunDisplay(console, plan.budget, records)

    tracking = _tracking(session, tracking_options, display.message)

    def round_end(round_no, round_records):  # (also for a round a kill cut short: its history then)
        history = [r for r in store.records() if r.round <= round_no]
        text = write_round_report(out, study, round_no, round_records, history, plan, run.preset, run.overrides)
        tracking.round_end(round_no, round_records)
        return text

    plots = TrialPlots()  # the seeds' 4-panel metrics_plot.png of each trial, drawn by a helper process

    def trial_start(record):
        display.trial_start(record)
        tracking.trial_start(record)

    def progress(record, entry):
        display.progress(record, entry)
        tracking.progress(record, entry)

    def trial_end(record):
        display.trial_end(record)
        plots.submit(out / record.run_dir)
        tracking.trial_end(record)

    hooks = LoopHooks(on_trial_start=trial_start, on_progress=progress,
                      on_trial_end=trial_end, on_round_end=round_end, on_message=display.message)
    loop = ResearchLoop(study, store, executor, planner, out, plan, run.overrides, run.preset, hooks,
                        workers=run.workers or 1, speculate=run.speculate)
    planner.attach(store, out, display.message)  # LLM planners record calls, transcripts and fallbacks

    interrupted = False
    llm_error = write_error = None
    try:
        with display:
            loop.run()
    except (TrialInterrupted, KeyboardInterrupt):
        interrupted = True
        store.recover()  # a Ctrl-C between two store writes can leave a trial "running": say so now
    except LLMUnavailable as e:  # stop loudly; finished trials are in the store, a rerun resumes
        llm_error = str(e)
    except Exception as e:  # the file system refused a write (disk full...): stop, keep what is recorded
        if (write_error := write_failure(e)) is None:
            raise
        _try(store.recover)  # trials it left running: interrupted, re-run on resume (if the store can write)
    else:
        llm_error = planner.unmet()  # e.g. an LLM that never gave a valid action, too few rounds to stop it
    plots.close()  # every trial's plot drawn before the report
    try:
        findings = write_report(session, plan)
    except Exception as e:  # (the report is written whole or not at all: the last one stays)
        if (why := write_failure(e)) is None:
            raise
        write_error = write_error or why
    else:
        tracking.summary()  # the ranking, verdict, tuning evidence and key plots, as the report computed them
        console.print(f"recommendation ({findings.recommendation.confidence} confidence): "
                      f"{recommendation_text(findings.recommendation)}", markup=False)
        console.print(f"report: {out / 'report.md'}", markup=False)
    tracking.close()
    ended = outcome(store.records(), {r.id for r in records}, interrupted=interrupted, llm_error=llm_error,
                    out=out, write_error=write_error)
    if ended.line:
        if ended.to_stderr:
            print(ended.line, file=sys.stderr)
        else:
            console.print(ended.line, markup=False)
    return ended.code


def _try(step) -> None:
    """`step()`, unless the file system refuses its write too (the run is stopping on that already)."""
    try:
        step()
    except Exception as e:
        if write_failure(e) is None:
            raise


# ------------------------------------------------------------------ how a run ended


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its exit code and the one line that says why (none for a success)."""

    code: int
    line: str | None = None
    to_stderr: bool = True  # an error goes to stderr; the interrupted note to the console


def outcome(records: list[TrialRecord], before: set[int], *, interrupted: bool = False,
            llm_error: str | None = None, out: Path, write_error: str | None = None) -> Outcome:
    """The one place that classifies a finished `run`: a write the file system refused (1: disk
    full, read-only; the recorded trials are kept, the same command resumes), interrupted (1),
    stopped by the LLM service (1), no trial with a result (1: every trial this command ran, or every
    trial of the run, failed or timed out), else success (0). `before`: the trial ids the run held
    when this command started."""
    from research_agents.session import TRIALS_DIR

    if write_error:
        return Outcome(EXIT_FAIL, f"error: {write_error}; the trials recorded so far are kept: fix that (free space, "
                       "permissions, the path named) and run the same command to resume")
    if interrupted:
        return Outcome(EXIT_FAIL, "interrupted: the running trial is marked interrupted; run the same command to "
                       "resume", to_stderr=False)
    if llm_error:
        return Outcome(EXIT_FAIL, f"error: {llm_error}; finished trials are saved, run the same command to resume")
    no_result = _no_result(records, before)
    if no_result:
        return Outcome(EXIT_FAIL, f"error: {no_result}; see the trials' trainer.log under {out / TRIALS_DIR}")
    return Outcome(EXIT_OK)


def _no_result(records: list[TrialRecord], before: set[int]) -> str | None:
    """Why the run produced nothing (every trial it ran, or every trial of the run, diverged, failed
    or timed out: no loss to compare), in one line; None when some trial completed."""
    from collections import Counter

    from research_agents.records import BAD, COUNTED

    counted = [r for r in records if r.status in COUNTED]
    new = [r for r in counted if r.id not in before]
    for what, group in (("this command ran", new), ("the run holds", counted)):
        if group and all(r.status in BAD for r in group):
            kinds = ", ".join(f"{n} {s}" for s, n in Counter(r.status for r in group).items())
            reason = " ".join((group[-1].reason or "no reason recorded").split())[:200]
            return f"no trial completed: the {len(group)} trial(s) {what} all ended without a result ({kinds}); " \
                   f"last reason: {reason}"
    return None


def _prepare_data(study: Study, preset: str, overrides: dict, console: Console) -> int | None:
    """Tokenise the study's data once, before any trial: every trial then reads the cache, and a
    source that cannot be had (a hub dataset offline) stops the run here, not in each trial.
    Returns the exit code when it cannot (2: the source or tokenizer cannot be loaded), else None."""
    from trainer.data import DataError, load_token_data

    configs = {study.trial_spec(arm, {}, seed=0, preset=preset, overrides=overrides).data for arm in study.arms}
    for data in configs:
        console.print(f"data: {data.source}, tokenizer {data.tokenizer} (cached after the first run)", markup=False)
        try:
            load_token_data(data)
        except Exception as e:  # noqa: BLE001 - any failure here is the data source's, said in one line
            reason = " ".join(str(e).split())[:400]
            print(f"error: data source {data.source!r} could not be prepared: {type(e).__name__}: {reason} "
                  "(offline? use --scale cpu or a local source)", file=sys.stderr)
            return EXIT_BAD_INPUT if isinstance(e, DataError) else EXIT_FAIL
    return None


__all__ = ["Outcome", "add_llm_arguments", "add_parser", "budget_lines", "command", "llm_config", "outcome"]
