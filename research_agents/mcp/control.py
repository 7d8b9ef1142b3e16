"""What the MCP server's tools do, without the protocol: list the studies, start or resume a run in
the background (a subprocess of the normal `run` command, so the run outlives the tool call), read a
run's status, findings, tuning evidence and report, and propose a research action for its next
round. Reads open the store read-only, as `status` and `report` do. A proposal is vetted exactly as
the loop vets a planner's action (`actions.expand` on a `Ledger` made from the run's store, as
rounds.search_round makes it) and queued for the run's `mcp` planner (planners/queued.py) only when
nothing in it is rejected; otherwise the reasons come back. Every call that names a run is recorded
in OUT/mcp/calls.jsonl (tool, arguments, result or error, time), as the LLM planner's calls are.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from research_agents import safefs
from research_agents.fmt import json_safe
from research_agents.planners.queued import QUEUE_DIR, TAKEN_META, parse_action, queue_path, read_queue

CALLS_FILE = "calls.jsonl"
START_WAIT_S = 5.0  # how long start_run waits to catch a run refused at once (bad input: exit 2)
REPORT_CHARS = 60_000
_procs: dict[str, subprocess.Popen] = {}  # runs this server started, by OUT


class ControlError(ValueError):
    """A tool's bad input or refused request, said in one line."""


def _experiments() -> Path:
    from research_agents.cli.common import experiments_dir

    return experiments_dir()


# ------------------------------------------------------------------ records


def _append(out: Path, name: str, entry: dict) -> None:
    """One JSON line appended to OUT/mcp/NAME, whole (the file rewritten atomically under a lock, so
    a reader never sees half a line and two servers never interleave)."""
    folder = Path(out) / QUEUE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fd = safefs.open_lock(folder / f".{name}.lock", root=Path(out))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = folder / name
        old = path.read_text() if path.is_file() else ""
        safefs.write_text(path, old + json.dumps(json_safe(entry), default=str) + "\n", root=Path(out))
    finally:
        os.close(fd)


def record_call(out: str | Path | None, tool: str, args: dict, result: Any = None, error: str | None = None) -> None:
    """A tool call into the run's OUT/mcp/calls.jsonl (when it names an existing run directory)."""
    if not out or not Path(out).is_dir():
        return
    _append(Path(out), CALLS_FILE, {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tool": tool, "args": args,
                                    "ok": error is None, "result": result, "error": error})


def calls(out: str | Path) -> list[dict]:
    path = Path(out) / QUEUE_DIR / CALLS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


# ------------------------------------------------------------------ studies and runs


def list_studies() -> list[dict]:
    from research_agents.config import load_study

    out: list[dict[str, Any]] = []
    for path in sorted(_experiments().glob("*.toml")):
        try:
            s = load_study(path)
        except ValueError as e:
            out.append({"name": path.stem, "invalid": " ".join(str(e).split())[:300]})
            continue
        out.append({"name": s.name, "question": s.question, "preset": s.preset, "arms": list(s.arms),
                    "scales": list(s.scales), "search": any(a.space for a in s.arms.values()),
                    "named_experiments": len(s.points)})
    return out


def _session(out: str | Path):
    from research_agents.config.plan import BadInput
    from research_agents.session import open_run

    try:
        return open_run(out)
    except BadInput as e:
        raise ControlError(str(e)) from None


def running(out: str | Path) -> str | None:
    """Who holds the run's lock ("pid 123"), None when no run is going on in OUT."""
    from research_agents.session import lock_holder

    return lock_holder(Path(out)) if Path(out).is_dir() else None


def start_run(study: str, budget: int, out: str | None = None, executor: str | None = None, planner: str = "mcp",
              scale: str | None = None, device: str | None = None) -> dict:
    """`python -m research_agents run ...` in the background (a new session: it outlives the call
    and the server); the same OUT resumes. Refused while a run holds OUT; a run the command
    refuses at once (bad input) comes back as the error with its line."""
    if budget < 1:
        raise ControlError("budget: at least 1 training run")
    target = Path(out) if out else _experiments() / "runs" / Path(study).stem
    target = target.resolve()
    if (holder := running(target)):
        raise ControlError(f"{target} is running ({holder}): wait for it to end, or use another out")
    cmd = [sys.executable, "-m", "research_agents", "run", "--study", study, "--budget", str(budget),
           "--out", str(target), "--planner", planner]
    if executor:
        kind, _, table = executor.partition(":")
        cmd += ["--executor", f"{kind}:{Path(table).resolve()}" if kind == "replay" and table else executor]
    if scale:
        cmd += ["--scale", scale]
    if device:
        cmd += ["--device", device]
    log = target / QUEUE_DIR / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=os.getcwd())
    _procs[str(target)] = proc
    try:
        code = proc.wait(timeout=START_WAIT_S)
    except subprocess.TimeoutExpired:
        code = None
    result = {"out": str(target), "pid": proc.pid, "command": " ".join(cmd), "log": str(log),
              "state": "running" if code is None else "ended", "exit_code": code}
    if code == 2:
        raise ControlError(f"run refused: {_tail(log, 1)}")
    return result


def _tail(path: Path, lines: int) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return "\n".join(text[-lines:])


def wait(out: str | Path, timeout_s: float = 600.0) -> dict:
    """Wait (at most timeout_s) until the run ends (the process this server started, else whoever
    holds OUT's lock); then its status."""
    end = time.monotonic() + max(0.0, timeout_s)
    proc = _procs.get(str(Path(out).resolve()))

    def going() -> bool:
        return (proc.poll() is None) if proc is not None else running(out) is not None

    while going() and time.monotonic() < end:
        time.sleep(0.5)
    return status(out)


def status(out: str | Path) -> dict:
    """The run's state: running or not (and how the last run this server started ended), its study,
    budget, planner, trials by status, rounds, each arm's best so far and the queued actions."""
    from collections import Counter

    session = _session(out)
    records = session.store.records()
    run = session.run
    proc = _procs.get(str(Path(out).resolve()))
    best: dict[str, Any] = {}
    for r in records:
        if r.ok and r.val_loss is not None and (r.arm not in best or r.val_loss < best[r.arm]["val_loss"]):
            best[r.arm] = {"val_loss": r.val_loss, "params": r.params, "trial": r.order}
    taken = {str(e.get("id")) for e in session.store.get_meta(TAKEN_META, []) or []}
    queued = [e for e in read_queue(session.out) if str(e["id"]) not in taken]
    return {"out": str(session.out), "study": session.study.name, "running": running(out),
            "last_exit_code": proc.poll() if proc is not None else None, "planner": run.planner,
            "budget": run.budget, "trials": len(records), "by_status": dict(Counter(r.status for r in records)),
            "rounds": max((r.round for r in records), default=0), "best_so_far": best,
            "queued_actions": queued, "report": (session.out / "report.md").is_file()}


def findings(out: str | Path) -> dict:
    """The analysis of the run as it stands (the final report's summary.json, computed now): the
    recommendation (verdict, confidence and its basis), the ranked configurations, the comparisons."""
    from research_agents.analysis.findings import analyze
    from research_agents.report.final import summary_json

    session = _session(out)
    data = summary_json(analyze(session.study, session.store.records(), session.run.plan()))
    return json_safe({"recommendation": data["recommendation"], "configs": data["configs"][:12],
                      "comparisons": data["comparisons"], "noise": data["noise"]})


def tuning_evidence(out: str | Path) -> dict:
    """Per arm and searched knob: bracketed, open below/above or at the edge, with the runs that
    would settle it (the report's Tuning evidence, as data and its line)."""
    from research_agents.report.words import knob_text
    from research_agents.snapshot import Snapshot

    session = _session(out)
    snap = Snapshot(session.study, session.run.plan(), session.store.records())
    return {arm: {"leader": ev.leader_params, "leader_mean": ev.leader_mean,
                  "knobs": [{"knob": k.knob, "status": k.status, "to_try": k.to_try, "text": knob_text(k)}
                            for k in ev.knobs]}
            for arm, ev in snap.evidence.items()}


def report(out: str | Path, round_no: int | None = None) -> dict:
    """The final report (report.md), or a round's report (the latest one when there is no final
    report yet), cut at REPORT_CHARS."""
    from research_agents.report.round import round_path

    session = _session(out)
    path = session.out / "report.md"
    if round_no is not None or not path.is_file():
        rounds = sorted((session.out / "rounds").glob("round-*.md"))
        path = round_path(session.out, round_no) if round_no is not None else (rounds[-1] if rounds else path)
    if not path.is_file():
        raise ControlError(f"no report yet in {session.out}" if round_no is None else f"no report of round {round_no}")
    text = path.read_text()
    return {"path": str(path), "text": text[:REPORT_CHARS], "truncated": len(text) > REPORT_CHARS}


# ------------------------------------------------------------------ proposals


def vet(out: str | Path, action: dict, budget: int | None = None) -> tuple[Any, list[str], list[dict]]:
    """(the parsed action, why it is rejected, the runs it asks for): the loop's own checks
    (`actions.expand` on a `Ledger` of the run's store), against the run's budget or, for a run to
    be resumed, against `budget`."""
    from research_agents.actions import Ledger, StopArm, expand
    from research_agents.config.space import config_id
    from research_agents.snapshot import Snapshot

    try:
        parsed = parse_action(action)
    except (ValueError, ValidationError) as e:
        errors = e.errors() if isinstance(e, ValidationError) else None
        why = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errors) if errors else str(e)
        return None, [f"not a research action: {why}"], []
    session = _session(out)
    run = session.run
    if run.experiments is not None:
        return parsed, ["this run trains named experiments only: it has no search to steer"], []
    plan = (run if budget is None else run.model_copy(update={"budget": budget})).plan()
    snap = Snapshot(session.study, plan, session.store.records())
    seen = {r.config for r in snap.records if r.phase == "search"}
    for arm, a in session.study.arms.items():  # the loop runs an arm's start point first
        if a.start is not None:
            seen.add(config_id(arm, a.start))
    need = {a: n for a, n in snap.round_slots.items() if n > 0}
    if not need and snap.budget_left <= 0:
        return parsed, [f"the run's budget ({plan.budget} runs) is spent: propose with the budget it will be "
                        "resumed with (budget=...), then start_run with that budget"], []
    ledger = Ledger(session.study, snap.records, snap.evidence, snap.search_left, dict(need), seen,
                    {a: 0 for a in session.study.arms}, plan=plan, preset=run.preset, overrides=run.overrides)
    reasons: list[str] = []
    runs: list[dict] = []
    for item, reason in expand(parsed, ledger):
        if reason:
            reasons.append(reason)
            continue
        ledger.accept(item)
        if not isinstance(item, StopArm):
            runs.append({"arm": item.arm, "params": item.params, "seeds": item.seeds, "kind": item.kind})
    return parsed, reasons, runs


def propose(out: str | Path, action: dict, budget: int | None = None) -> dict:
    """Vet a research action for the run's next round; queue it when nothing in it is rejected
    (the run must use `--planner mcp` to take it)."""
    parsed, reasons, runs = vet(out, action, budget)
    if reasons:
        return {"accepted": False, "reasons": reasons}
    session = _session(out)
    entry = {"id": uuid.uuid4().hex[:12], "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "action": parsed.model_dump(mode="json", exclude={"origin"})}
    _append(session.out, queue_path(session.out).name, entry)
    note = None
    if session.run.planner != "mcp":
        note = f"this run's planner is {session.run.planner}: resume it with planner 'mcp' to take queued actions"
    return {"accepted": True, "id": entry["id"], "runs": runs, "note": note,
            "running": running(out) is not None}


__all__ = ["CALLS_FILE", "ControlError", "calls", "findings", "list_studies", "propose", "record_call", "report",
           "running", "start_run", "status", "tuning_evidence", "vet", "wait"]
