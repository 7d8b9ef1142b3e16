"""The MCP server end to end with the official SDK's own client over stdio: it lists a study, starts
a replay run in the background, rejects an invalid research action with the reason, queues a valid
one that the next round runs (origin "mcp"), and reads the verdict; every call is recorded in the run."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPLAY = ROOT / "benchmarks" / "data" / "replay_tiny.csv"
STUDY = "muon_vs_adamw_wen"


async def _session(out: Path) -> dict:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    server = StdioServerParameters(command=sys.executable, args=["-m", "research_agents", "mcp"], cwd=str(ROOT),
                                   env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")})
    seen: dict = {}
    async with Client(server, read_timeout_seconds=900) as client:
        async def call(tool: str, **args) -> dict:
            result = await client.call_tool(tool, args)
            if result.is_error:
                return {"error": result.content[0].text}
            return result.structured_content["result"]

        seen["tools"] = {t.name for t in (await client.list_tools()).tools}
        seen["studies"] = await call("list_studies")
        seen["start"] = await call("start_run", study=STUDY, budget=8, out=str(out), executor=f"replay:{REPLAY}")
        seen["first"] = await call("status", out=str(out), wait_s=600)
        evidence = await call("tuning_evidence", out=str(out))
        lr = evidence["arms"]["muon"]["knobs"][0]
        assert lr["knob"] == "lr" and lr["to_try"], lr
        seen["point"] = {**evidence["arms"]["muon"]["leader"], "lr": lr["to_try"][0]}
        seen["out_of_range"] = await call("propose_action", out=str(out), budget=24,
                                          action={"kind": "try", "arm": "muon", "params": {**seen["point"], "lr": 9.0}})
        seen["not_an_action"] = await call("propose_action", out=str(out), budget=24,
                                           action={"kind": "explode", "arm": "muon"})
        seen["spent"] = await call("propose_action", out=str(out),
                                   action={"kind": "try", "arm": "muon", "params": seen["point"]})
        seen["valid"] = await call("propose_action", out=str(out), budget=24,
                                   action={"kind": "try", "arm": "muon", "params": seen["point"],
                                           "rationale": "bracket the leader's LR from below"})
        seen["no_run"] = await call("status", out=str(out.parent / "nothing-here"))
        seen["resume"] = await call("start_run", study=STUDY, budget=24, out=str(out), executor=f"replay:{REPLAY}")
        seen["second"] = await call("status", out=str(out), wait_s=600)
        seen["findings"] = await call("findings", out=str(out))
        seen["report"] = await call("report", out=str(out))
    return seen


@pytest.fixture(scope="module")
def steered(tmp_path_factory) -> tuple[Path, dict]:
    pytest.importorskip("mcp")
    out = tmp_path_factory.mktemp("mcp") / "run"
    return out, asyncio.run(_session(out))


def test_lists_the_tools_and_a_study(steered):
    _, seen = steered
    assert {"list_studies", "start_run", "status", "findings", "tuning_evidence", "report",
            "propose_action"} <= seen["tools"]
    study = next(s for s in seen["studies"]["studies"] if s["name"] == STUDY)
    assert study["arms"] == ["muon", "adamw"] and study["search"]


def test_a_run_started_in_the_background_finishes(steered):
    _, seen = steered
    assert seen["start"]["command"].split()[1:4] == ["-m", "research_agents", "run"]
    assert seen["first"]["running"] is None and seen["first"]["last_exit_code"] == 0
    assert seen["first"]["trials"] == 8 and seen["first"]["planner"] == "mcp"


def test_invalid_actions_are_rejected_with_the_reason(steered):
    _, seen = steered
    assert seen["out_of_range"]["accepted"] is False
    assert any("lr" in why and "outside" in why for why in seen["out_of_range"]["reasons"])
    assert seen["not_an_action"]["accepted"] is False
    assert "not a research action" in seen["not_an_action"]["reasons"][0]
    assert "budget" in seen["spent"]["reasons"][0]  # its budget is spent: it names what to do
    assert "not a run directory" in seen["no_run"]["error"]


def test_a_valid_action_runs_in_the_next_round(steered):
    out, seen = steered
    from research_agents.session import open_run

    assert seen["valid"]["accepted"] is True and seen["valid"]["runs"][0]["params"] == seen["point"]
    assert seen["second"]["last_exit_code"] == 0 and seen["second"]["queued_actions"] == []
    records = open_run(out).store.records()
    first_round = max(r.round for r in records[:8])
    mine = [r for r in records if r.origin == "mcp"]
    assert mine and all(r.params == seen["point"] and r.arm == "muon" for r in mine)
    assert min(r.round for r in mine) == first_round + 1  # the next round, before the policy's own points
    assert mine[0].rationale == "bracket the leader's LR from below"
    taken = open_run(out).store.get_meta("mcp_actions")
    assert [t["id"] for t in taken] == [seen["valid"]["id"]] and taken[0]["problem"] is None


def test_reads_the_verdict(steered):
    _, seen = steered
    rec = seen["findings"]["recommendation"]
    assert rec["confidence"] in ("low", "moderate", "high") and rec["text"]
    assert seen["report"]["path"].endswith("report.md") and "Recommendation" in seen["report"]["text"]


def test_every_call_is_recorded_in_the_run(steered):
    out, _ = steered
    lines = [json.loads(x) for x in (out / "mcp" / "calls.jsonl").read_text().splitlines()]
    tools = [c["tool"] for c in lines]
    assert tools.count("propose_action") == 4 and tools.count("start_run") == 2
    rejected = [c for c in lines if c["tool"] == "propose_action" and not c["result"]["accepted"]]
    assert len(rejected) == 3 and all(c["result"]["reasons"] for c in rejected)


class _Meta:
    """The store's metadata, as the planner uses it."""

    def __init__(self):
        self.meta: dict = {}

    def get_meta(self, key, default=None):
        return self.meta.get(key, default)

    def append_meta(self, key, items):
        self.meta.setdefault(key, []).extend(items)


def test_the_mcp_planner_takes_queued_actions_first_once_then_the_policy(tmp_path):
    from research_agents.config import load_study
    from research_agents.planners.base import PlanningContext
    from research_agents.planners.queued import QueuedPlanner, queue_path

    study = load_study(STUDY, ROOT / "experiments")
    point = {"lr": 0.04, "momentum": 0.95, "momentum_schedule.kind": "fixed", "ns_steps": 5}
    queue_path(tmp_path).parent.mkdir(parents=True)
    queue_path(tmp_path).write_text(
        json.dumps({"id": "a1", "action": {"kind": "try", "arm": "muon", "params": point}}) + "\n"
        + json.dumps({"id": "a2", "action": {"kind": "try", "arm": "adamw", "params": {"lr": 0.02}}})  # no newline yet
    )
    planner, store = QueuedPlanner(seed=0), _Meta()
    planner.attach(store, tmp_path)
    ctx = PlanningContext(study=study, wanted={"muon": 2, "adamw": 1}, history=[], round=1)
    got = planner.propose(ctx)
    assert (got[0].origin, got[0].arm, got[0].params) == ("mcp", "muon", point)
    assert [p.arm for p in got[1:]] == ["muon", "adamw"] and all(p.origin != "mcp" for p in got[1:])
    assert [t["id"] for t in store.meta["mcp_actions"]] == ["a1"]  # a2 is still being written
    again = planner.propose(ctx)
    assert all(p.origin != "mcp" for p in again)  # taken once
