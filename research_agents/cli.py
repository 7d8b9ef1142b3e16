"""Command line: run | report | status | list.

Exit codes: 0 success; 2 bad input, one line naming what is wrong and nothing written (a value,
a study, an --out or --storage that cannot be used, a run directory whose store is missing or
damaged, another run holding the same --out); 1 anything else: a run in which no trial completed,
an interrupted run (its report is written and `run` again resumes it).

The store is the record of a run: `status` and `report` open it read-only, and no command ever
makes a new, empty store in place of one that is missing or damaged.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from research_agents import rundir
from research_agents.argtypes import number, positive, whole
from research_agents.config.plan import BadInput
from research_agents.planners.llm_client import DEFAULT_MODEL, OPENAI_URL, PRICE_ENV, SEND_KEY_ENV, LLMConfig
from research_agents.rundir import RUN_FILE
from research_agents.redact import mask_urls
from research_agents.safefs import UnsafePath
from trainer.presets import RUN_PRESETS

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


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


def build_parser() -> argparse.ArgumentParser:
    from research_agents.planners import PLANNERS

    parser = _Parser(prog="research-agents", description="Optimizer research that runs itself.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="plan, train, analyse and report until the budget is spent")
    run.add_argument("--budget", type=whole(1), default=None,
                     help="training runs, confirmation included (default 20; a point run: points x seeds)")
    run.add_argument("--study", default="muon_vs_adamw", help="study name in experiments/ or a TOML file")
    run.add_argument("--planner", default="auto", choices=PLANNERS)
    run.add_argument("--out", help="run directory (default experiments/runs/<study>); reused = resumed")
    run.add_argument("--preset", choices=sorted(RUN_PRESETS), help="override the study's preset")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where trials train")
    run.add_argument("--seeds", type=whole(2), help="fresh confirmation seeds per leader (>= 2: one seed "
                     "measures no noise)")
    run.add_argument("--storage", help="SQLAlchemy URL of the trial database (default: sqlite in --out)")
    run.add_argument("--grid", help='manual grid, e.g. "lr=0.01,0.02 momentum=0.9,0.95"')
    run.add_argument("--scale", help="the study's scale: seed (its own model, data, steps) or cpu "
                     "(minutes on 2 cores); default seed on CUDA, else cpu")
    run.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                     help="trial spec overrides for every run, e.g. steps=50 data.max_docs=40")
    run.add_argument("--save-model", action="store_true", help="save each trial's model (model.safetensors)")
    run.add_argument("--executor", default="local", help="how trials run: local (default: each trial its own "
                     "process, forked from a server that has imported torch once), local-cold (a new "
                     "interpreter per trial), ray (Ray tasks: this machine or a cluster, see --ray-address) "
                     "or replay:TABLE (answers from a table of real results, e.g. "
                     "benchmarks/data/replay_tiny.csv: a study in seconds)")
    run.add_argument("--workers", type=whole(1), help="trials that train at once (default: one per GPU on CUDA; "
                     "on CPU the cores divided by $OMP_NUM_THREADS, which defaults to 1 per trial; with Ray "
                     "the cluster's GPUs or CPUs); results do not depend on it")
    run.add_argument("--speculate", action=argparse.BooleanOptionalAction, default=True,
                     help="with several workers, train a run the next round will likely make on a worker that "
                     "would sit idle at a round's end; a round that makes it adopts it, one that does not "
                     "throws it away (default: on; results do not depend on it)")
    run.add_argument("--ray-address", help="--executor ray: the cluster to join (auto, or HOST:PORT); default "
                     "a new local Ray on this machine")
    add_llm_arguments(run)  # --llm-base-url, --llm-model, --llm-share, --on-llm-error, ...
    form = run.add_mutually_exclusive_group()
    form.add_argument("--quick", action="store_true", help="run the study's quick experiments")
    form.add_argument("-e", "--experiments", nargs="+", metavar="NAME",
                      help="run these named experiments (names, aliases or group names)")
    form.add_argument("--all", action="store_true", help="run every named experiment")
    form.add_argument("--list", action="store_true", help="list the study's named experiments and exit")
    report = sub.add_parser("report", help="rebuild the reports of a run directory from its store")
    report.add_argument("out")
    status = sub.add_parser("status", help="print the trials table of a run directory")
    status.add_argument("out")
    sub.add_parser("list", help="list the studies in experiments/")
    return parser


def _tolerant_streams() -> None:
    """A character the terminal's encoding lacks (LANG=C: ASCII) is printed escaped, never a crash."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _tolerant_streams()
    # long lines stay whole in logs and pipes; tables get room when there is no terminal to fit
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
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
    except (UsageError, BadInput, UnsafePath) as e:
        print(f"error: {mask_urls(str(e))}", file=sys.stderr)  # no credentials of any URL on the console
        return EXIT_BAD_INPUT


# ------------------------------------------------------------------ LLM flags


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
    g.add_argument("--llm-timeout", type=positive(), help="seconds per request, whole (not per read; default 300 "
                   "for a server on this machine, 60 for a remote one)")
    g.add_argument("--llm-send-key", action="store_true", help="send OPENAI_API_KEY to --llm-base-url although it is "
                   f"not api.openai.com (or ${SEND_KEY_ENV}=1); never over plain http to another machine")
    g.add_argument("--llm-bad-rounds", type=whole(1), default=2, help="rounds in a row without one valid LLM "
                   "action that count as an LLM failure, handled as --on-llm-error says (default 2)")
    g.add_argument("--llm-tries", type=whole(1), default=3, help="tries per request (default 3)")
    g.add_argument("--llm-backoff", type=number(0.0), default=1.0, help="first wait between tries, doubled each "
                   "time (default 1 s)")
    g.add_argument("--llm-repairs", type=whole(0), default=3, help="corrected batches asked for per round (default 3)")
    g.add_argument("--llm-max-tokens", type=whole(1), default=1024, help="completion tokens per call (default 1024)")
    g.add_argument("--llm-price-in", type=number(0.0), help="USD per 1M prompt tokens (or $RESEARCH_AGENTS_LLM_PRICE_IN)")
    g.add_argument("--llm-price-out", type=number(0.0), help="USD per 1M completion tokens "
                   "(or $RESEARCH_AGENTS_LLM_PRICE_OUT)")


def llm_config(args: argparse.Namespace, env: dict[str, str] | None = None):
    """The LLM settings (an LLMConfig) from flags and environment; `configured`: an endpoint is set.

    ValueError (one line) when the key would go over plain http to another machine."""
    env = os.environ if env is None else env
    base_url = getattr(args, "llm_base_url", None) or env.get("OPENAI_BASE_URL") or None
    key = env.get("OPENAI_API_KEY") or None
    model = getattr(args, "llm_model", None) or env.get("OPENAI_MODEL") or DEFAULT_MODEL
    sources = [s for s, on in (("--llm-base-url", getattr(args, "llm_base_url", None)),
                               ("--llm-model", getattr(args, "llm_model", None)),
                               ("OPENAI_BASE_URL", env.get("OPENAI_BASE_URL")),
                               ("OPENAI_API_KEY", key)) if on]
    prices = []
    for flag, name in zip(("llm_price_in", "llm_price_out"), PRICE_ENV):
        value = getattr(args, flag, None)
        if value is None and env.get(name):
            try:
                value = number(0.0)(env[name])
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"${name}: {e}") from None
        prices.append(value)
    send_key = bool(getattr(args, "llm_send_key", False)) or env.get(SEND_KEY_ENV, "").strip() == "1"
    cfg = LLMConfig(base_url=base_url.rstrip("/") if base_url else None, model=model, api_key=key, send_key=send_key,
                    timeout_s=getattr(args, "llm_timeout", None) or None,
                    tries=max(1, getattr(args, "llm_tries", 3)), backoff_s=getattr(args, "llm_backoff", 1.0),
                    repairs=getattr(args, "llm_repairs", 3), max_tokens=getattr(args, "llm_max_tokens", 1024) or 1024,
                    price_in=prices[0], price_out=prices[1], on_error=getattr(args, "on_llm_error", "stop"),
                    share=getattr(args, "llm_share", None), configured=bool(sources), source=", ".join(sources),
                    bad_rounds=getattr(args, "llm_bad_rounds", 2))
    if cfg.configured and (problem := cfg.key_problem()):
        raise ValueError(problem)
    return cfg


def reproduce_flags(saved: dict) -> str:
    """LLM flags for the report's reproduce command (endpoint and model; never a key)."""
    llm = saved.get("llm") or {}
    if not llm:
        return ""
    flags = f" --llm-model {llm['model']}"
    if llm.get("endpoint") and llm["endpoint"] != OPENAI_URL:
        flags = f" --llm-base-url {llm['endpoint']}" + flags
    if llm.get("on_error") == "fallback":
        flags += " --on-llm-error fallback"
    if llm.get("key_sent") and llm.get("endpoint") != OPENAI_URL:
        flags += " --llm-send-key"
    return flags


# ------------------------------------------------------------------ list / status / report


def cmd_list(console: Console) -> int:
    from rich.table import Table

    from research_agents.config import load_study

    table = Table(title=escape(f"studies in {experiments_dir()}"))
    for col in ("study", "preset", "scales", "arms", "experiments", "question"):
        table.add_column(col, no_wrap=col == "study")
    for path in sorted(experiments_dir().glob("*.toml")):
        try:
            s = load_study(path)
            table.add_row(*map(escape, (s.name, s.preset, ", ".join(s.scales) or "-", ", ".join(s.arms),
                                        str(len(s.points)) if s.points else "search", s.question)))
        except ValueError as e:
            table.add_row(escape(path.stem), "-", "-", "-", "-", f"[red]invalid: {escape(str(e))}[/red]")
    console.print(table)
    return EXIT_OK


def _open_run(out_text: str):
    """Study and read-only store of an existing run directory (UsageError if it is not one, or
    its store cannot be read). Creates and writes nothing."""
    from pydantic import ValidationError

    from research_agents.config import Study

    out = Path(out_text)
    saved = rundir.read_run_file(out)
    if saved is None:
        raise UsageError(f"{out} is not a run directory (no {RUN_FILE})")
    try:
        study = Study.model_validate(saved["study"])
    except ValidationError as e:
        raise UsageError(f"{out / RUN_FILE}: the saved study is not valid ({e.error_count()} error(s)); "
                         "restore run.json") from None
    return out, saved, study, _store(out, study, saved.get("storage"), readonly=True)


def _store(out: Path, study, url: str | None, readonly: bool = False):
    """The run's store (UsageError in one line when it cannot be opened: never rebuilt from empty)."""
    from research_agents.store import OptunaStore, StoreError

    try:
        return OptunaStore.for_study(out, study, url=url, readonly=readonly)
    except StoreError as e:
        held = rundir.holds_a_run(out)
        where = f"{out} holds a run ({held}) but its store" if held else "the store"
        raise UsageError(f"{where} cannot be used: {e}. The store is the record of the run and is never rebuilt "
                         "from empty: restore it (e.g. study.db from a backup), or use another --out") from None


def cmd_status(args, console: Console) -> int:
    from research_agents.console import trials_table

    out, saved, study, store = _open_run(args.out)
    records = store.records()
    console.print(trials_table(records, title=f"{study.name}: {len(records)} trials"))
    return EXIT_OK


def cmd_report(args, console: Console) -> int:
    from research_agents.config import make_plan

    out, saved, study, store = _open_run(args.out)
    rundir.check_writable(out, "report:")  # it rewrites the reports (never the store)
    if saved.get("experiments") is not None:
        from research_agents.config.runforms import point_plan

        plan = point_plan(study, study.select_points(saved["experiments"]), saved["budget"])
    else:
        plan = make_plan(study, saved["budget"], saved.get("confirm_seeds"), adaptive=saved.get("planner") == "policy")
    findings = _final_report(out, study, plan, store, saved)
    console.print(f"report: {out / 'report.md'} ({findings.recommendation.confidence} confidence)", markup=False)
    return EXIT_OK


# ------------------------------------------------------------------ run


def cmd_run(args, console: Console) -> int:
    from research_agents.config import BadInput, load_study, make_plan, runforms
    from research_agents.execution import make_executor
    from research_agents.planners import make_planner, point_planner

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
                             adaptive=planner.name == "policy")
        else:
            if args.grid or args.seeds is not None or args.planner not in ("auto", "grid"):
                raise ValueError("named experiments run as defined on the study's seeds: "
                                 "--grid, --planner and --seeds do not apply")
            planner, planner_line = point_planner(study, points)
            plan = runforms.point_plan(study, points, args.budget or runforms.point_budget(study, points))
        overrides = runforms.parse_set(args.set)
    except (ValueError, BadInput) as e:
        raise UsageError(str(e)) from None
    out = Path(args.out) if args.out else experiments_dir() / "runs" / study.name
    overrides.update({"save_checkpoint": True} if args.save_model else {})
    overrides.update({"device": args.device} if args.device else {})
    preset = args.preset or study.preset
    try:  # every point of the run must make a valid trial spec, on a device this machine has
        specs = runforms.check_specs(study, points, preset, overrides)
        device = "cuda" if any(s.device == "cuda" for s in specs) else \
            "cpu" if all(s.device == "cpu" for s in specs) else "auto"
        executor = make_executor(args.executor, device=device, ray_address=args.ray_address)
        if executor.trains_locally:
            runforms.check_devices(specs)
        executor.connect()
        workers = args.workers or executor.default_workers()
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from None

    saved = {"study": study.model_dump(mode="json"), "budget": plan.budget, "confirm_seeds": args.seeds,
             "preset": preset, "overrides": overrides, "planner": planner.name, "storage": args.storage,
             "scale": scale, "experiments": None if points is None else [p.name for p in points],
             "executor": executor.describe(), "workers": workers, "speculate": args.speculate}
    if planner.public() is not None:  # LLM planners: endpoint and model, never the key
        saved["llm"] = planner.public()
    _check_run_dir(out, study, saved, args.storage)
    return _run(study, plan, planner, planner_line, executor, out, saved, preset, overrides, console)


def _check_run_dir(out: Path, study, saved: dict, storage_flag: str | None) -> None:
    """Before anything is written: the storage URL, OUT (writable, not locked), the run it holds (the
    same study and arguments) and that run's store (readable: a run never starts over on a lost
    one). Sets saved["storage"] to the run's store when --storage is not given."""
    from research_agents.config import runforms
    from research_agents.store import StoreError, check_url, default_url, sqlite_path

    if storage_flag is not None:
        try:
            check_url(storage_flag)
        except StoreError as e:
            raise UsageError(f"--storage: {e}") from None
    before = rundir.read_run_file(out) if out.is_dir() else None
    if before is not None:
        keep = ("arms", "base", "seeds", "comparisons", "points")
        if (any(before["study"].get(k) != saved["study"].get(k) for k in keep)
                or before.get("preset") != saved["preset"] or not runforms.resumable(before, saved)):
            raise UsageError(f"{out} holds a run of a different study definition, scale, preset, --set or "
                             "experiments; use another --out or the same arguments")
        if storage_flag is None:
            saved["storage"] = before.get("storage")
    rundir.check_out(out, sqlite_path(saved["storage"] or default_url(out)))
    if rundir.holds_a_run(out):  # its store must open as it is (a store without a run is completed later)
        _store(out, study, saved["storage"], readonly=True)


def _run(study, plan, planner, planner_line, executor, out: Path, saved: dict, preset, overrides, console) -> int:
    console.print(f"[bold]{escape(study.name)}[/bold]: {escape(study.question)}")  # user text is never markup
    failed = _prepare_data(study, preset, overrides, console) if executor.trains_locally else None
    if failed is not None:
        return failed
    out.mkdir(parents=True, exist_ok=True)
    with rundir.RunLock(out):  # one run per OUT; the kernel drops the lock however this process ends
        store = _store(out, study, saved["storage"])
        rundir.write_run_file(out, saved)
        return _run_locked(study, plan, planner, planner_line, executor, out, saved, store, preset, overrides,
                           console)


def _run_locked(study, plan, planner, planner_line, executor, out: Path, saved: dict, store, preset, overrides,
                console) -> int:
    from research_agents.console import RunDisplay
    from research_agents.execution import TrialInterrupted
    from research_agents.loop import LoopHooks, ResearchLoop
    from research_agents.planners.llm_client import LLMUnavailable
    from research_agents.report.plots import TrialPlots
    from research_agents.report.round import write_round_report

    console.print(planner_line, markup=False)
    if plan.adaptive:
        console.print(f"budget {plan.budget} runs: equal search shares per arm; confirmation on 3 to "
                      f"{len(plan.confirm_seeds)} fresh paired seeds per leader (from {plan.confirm_seeds}), as many "
                      f"as the measured noise needs, the rest to the search; out: {out}", markup=False)
    else:
        console.print(f"budget {plan.budget} runs: search {plan.search_budget} "
                      f"({', '.join(f'{a} {n}' for a, n in plan.search_share.items())}), confirmation "
                      f"{plan.budget - plan.search_budget} on seeds {plan.confirm_seeds}; out: {out}", markup=False)
    workers = saved["workers"]
    console.print(f"trials: {saved['executor']}, {workers} at a time", markup=False)
    if workers > study.planner.trials_per_round:
        console.print(f"note: a round holds {study.planner.trials_per_round} trials, so at most that many of the "
                      f"{workers} workers are busy; raise planner.trials_per_round in the study to use them all "
                      "(a round's size, not the workers, decides what the planner sees)", markup=False)
    records = store.records()
    display = RunDisplay(console, plan.budget, records)

    def round_end(round_no, round_records):  # (also for a round a kill cut short: its history then)
        history = [r for r in store.records() if r.round <= round_no]
        return write_round_report(out, study, round_no, round_records, history, plan)

    plots = TrialPlots()  # the seeds' 4-panel metrics_plot.png of each trial, drawn by a helper process

    def trial_end(record):
        display.trial_end(record)
        plots.submit(out / record.run_dir)

    hooks = LoopHooks(on_trial_start=display.trial_start, on_progress=display.progress,
                      on_trial_end=trial_end, on_round_end=round_end, on_message=display.message)
    loop = ResearchLoop(study, store, executor, planner, out, plan, overrides, preset, hooks, workers=workers,
                        speculate=saved.get("speculate", True))
    planner.attach(store, out, display.message)  # LLM planners record calls, transcripts and fallbacks

    interrupted = False
    llm_error = None
    try:
        with display:
            loop.run()
    except (TrialInterrupted, KeyboardInterrupt):
        interrupted = True
        store.recover()  # a Ctrl-C between two store writes can leave a trial "running": say so now
    except LLMUnavailable as e:  # stop loudly; finished trials are in the store, a rerun resumes
        llm_error = str(e)
    plots.close()  # every trial's plot drawn before the report
    findings = _final_report(out, study, plan, store, saved)
    console.print(f"recommendation ({findings.recommendation.confidence} confidence): "
                  f"{findings.recommendation.text}", markup=False)
    console.print(f"report: {out / 'report.md'}", markup=False)
    if interrupted:
        console.print("interrupted: the running trial is marked interrupted; run the same command to resume",
                      markup=False)
        return EXIT_FAIL
    if llm_error:
        print(f"error: {llm_error}; finished trials are saved, run the same command to resume", file=sys.stderr)
        return EXIT_FAIL
    no_result = _no_result(store.records(), {r.id for r in records})
    if no_result:
        print(f"error: {no_result}; see the trials' trainer.log under {out / rundir.TRIALS_DIR}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _no_result(records, before: set[int]) -> str | None:
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


def _prepare_data(study, preset, overrides, console) -> int | None:
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


def _final_report(out: Path, study, plan, store, saved: dict):
    from research_agents.analysis.findings import analyze
    from research_agents.analysis.planning import META_KEYS, planning_summary
    from research_agents.config.runforms import command_line
    from research_agents.report.artifacts import write_study_artifacts
    from research_agents.report.final import setup_from_metrics, write_final_report
    from research_agents.report.sections import planning_sections

    records = store.records()
    extra = {"planner": saved.get("planner"), "budget": plan.budget, "confirmation_seeds": plan.confirm_seeds,
             "storage": "external database" if saved.get("storage") else "sqlite in the run directory"}
    if saved.get("scale"):
        extra["scale"] = saved["scale"]
    if saved.get("executor"):
        extra["trials"] = f"{saved['executor']}, {saved.get('workers') or 1} at a time"
        ahead = store.get_meta("speculation")
        if ahead and ahead.get("started"):
            extra["trials"] += (f"; {ahead['started']} run(s) trained ahead on idle workers, {ahead['used']} "
                                f"adopted by their round, {ahead['discarded']} thrown away (never counted)")
    if saved.get("experiments") is not None:
        extra["experiments"] = ", ".join(saved["experiments"])
    if saved.get("overrides"):
        extra["overrides"] = saved["overrides"]
    metrics = next((m for r in records if r.ok and (m := r.metrics(out))), None)
    setup = setup_from_metrics(metrics, study, saved.get("preset"), **extra) if metrics else extra
    commands = [command_line({**saved, "budget": plan.budget}, out) + reproduce_flags(saved),
                f"python -m research_agents report {out}"]
    best = min((r for r in records if r.ok), key=lambda r: r.val_loss, default=None)
    if best:
        commands.append(f"python -m trainer run --spec {out / best.run_dir / 'spec.json'} --out /tmp/best-trial")
    fnd = analyze(study, records, plan)
    sections = write_study_artifacts(out, study, records, fnd)  # seeds' artifacts, claims, extra analyses
    planning = planning_summary({k: store.get_meta(k) for k in META_KEYS})
    sections = [*sections, *planning_sections(planning)]  # LLM usage, rejected proposals
    return write_final_report(out, study, plan, records, setup, commands, extra_sections=sections, findings=fnd)


if __name__ == "__main__":
    sys.exit(main())
