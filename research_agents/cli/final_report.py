"""The final report of a run session (written by `run` at its end and by `report`): the set-up as
run.json and the trials say it, the commands that reproduce the run, the analysis and the sections
that go with it."""

from __future__ import annotations

from typing import Any

from research_agents.config.plan import Plan
from research_agents.session import RunSession


def setup_extra(session: RunSession, plan: Plan) -> dict[str, Any]:
    """The report's set-up lines that come from the run file and the store's meta."""
    run, store = session.run, session.store
    extra: dict[str, Any] = {"planner": run.planner, "budget": plan.budget, "confirmation_seeds": plan.confirm_seeds,
                             "storage": "external database" if run.storage else "sqlite in the run directory"}
    if run.scale:
        extra["scale"] = run.scale
    if plan.rungs is not None:  # (kept in run.json: a `report` rebuild states it too)
        from research_agents.rungs import RUNGS, late_allowance

        late = late_allowance(plan.rungs_late)
        at = "/".join(str(q) for q in RUNGS)
        extra["early stops"] = (f"a search run stops at {at}% of its steps when behind its arm's leader by more "
                                f"than {plan.rungs:g} x the seed-noise sd + {late:g} x the leader's drop from there "
                                "to its end")
    if run.executor:
        extra["trials"] = f"{run.executor}, {run.workers or 1} at a time"
        ahead = store.get_meta("speculation")
        if ahead and ahead.get("started"):
            extra["trials"] += (f"; {ahead['started']} run(s) trained ahead on idle workers, {ahead['used']} "
                                f"adopted by their round, {ahead['discarded']} thrown away (never counted)")
    if failures := tracking_failures(store.get_meta("tracking_errors")):
        extra["tracking failures"] = failures
    if run.experiments is not None:
        extra["experiments"] = ", ".join(run.experiments)
    if run.overrides:
        extra["overrides"] = run.overrides
    return extra


def tracking_failures(errors: Any, shown: int = 5) -> str | None:
    """The tracking backends that failed (the store's "tracking_errors"), in one line; None: none."""
    items = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    if not items:
        return None
    text = "; ".join(f"{e.get('backend', '?')} in {e.get('hook', '?')}: {e.get('error', 'no reason recorded')}"
                     for e in items[:shown])
    more = f"; {len(items) - shown} more" if len(items) > shown else ""
    return f"{text}{more} (each backend left out for the rest of the run; no trial failed for it)"


def write_report(session: RunSession, plan: Plan):
    """Write report.md and the study's artifacts; returns the findings."""
    from research_agents.analysis.findings import analyze
    from research_agents.analysis.planning import META_KEYS, planning_summary
    from research_agents.report.artifacts import write_study_artifacts
    from research_agents.report.final import setup_from_metrics, write_final_report
    from research_agents.report.sections import planning_sections

    out, study, store, run = session.out, session.study, session.store, session.run
    records = store.records()
    extra = setup_extra(session, plan)
    metrics = next((m for r in records if r.ok and (m := r.metrics(out))), None)
    setup = setup_from_metrics(metrics, study, run.preset, **extra) if metrics else extra
    commands = [run.command_line(out, budget=plan.budget), f"python -m research_agents report {out}"]
    best = min((r for r in records if r.ok), key=lambda r: r.val_loss or 0.0, default=None)  # (ok: a loss)
    if best:
        commands.append(f"python -m trainer run --spec {out / best.run_dir / 'spec.json'} --out /tmp/best-trial")
    fnd = analyze(study, records, plan)
    sections = write_study_artifacts(out, study, records, fnd)  # seeds' artifacts, claims, extra analyses
    planning = planning_summary({k: store.get_meta(k) for k in META_KEYS})
    sections = [*sections, *planning_sections(planning)]  # LLM usage, rejected proposals
    return write_final_report(out, study, plan, records, setup, commands, extra_sections=sections, findings=fnd)


__all__ = ["setup_extra", "tracking_failures", "write_report"]
