"""The MCP server (`python -m research_agents mcp`, stdio) on the official `mcp` SDK's MCPServer:
one tool per control.py function. Each call naming a run directory is recorded there
(OUT/mcp/calls.jsonl); bad input or a refused request comes back as a tool error with its reason."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from research_agents.mcp import control

INSTRUCTIONS = """Steer optimizer research runs of research_agents. list_studies names the studies;
start_run starts (or, on the same out, resumes with a larger budget) a run in the background with the
'mcp' planner, which takes the research actions you queue with propose_action first and lets the
default policy plan the rest. status, findings, tuning_evidence and report read a run. An action is
one of {"kind": "try", "arm", "params", "rationale"}, {"kind": "replicate", "arm", "params", "seeds"},
{"kind": "bracket", "arm", "knob"}, {"kind": "stop", "arm"}; it is validated as the loop validates
every planner's actions and rejected with the reason otherwise."""


def _recorded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a control function in a worker thread, record the call in its run, and turn its bad input
    into a tool error (never a traceback)."""

    @functools.wraps(fn)
    async def tool(**kwargs: Any) -> Any:
        out = kwargs.get("out")
        try:
            result = await anyio.to_thread.run_sync(functools.partial(fn, **kwargs))
        except (control.ControlError, ValueError, OSError) as e:
            why = " ".join(str(e).split())
            control.record_call(out, fn.__name__, kwargs, error=why)
            raise ToolError(why) from None
        control.record_call(result.get("out", out) if isinstance(result, dict) else out, fn.__name__, kwargs,
                            result=result)
        return result

    tool.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]  # the tool's schema: fn's parameters
    return tool


def list_studies() -> dict:
    """The studies in experiments/ (name, question, arms, preset, scales, whether it searches)."""
    return {"studies": control.list_studies()}


def start_run(study: str, budget: int, out: str | None = None, executor: str | None = None, planner: str = "mcp",
              scale: str | None = None, device: str | None = None) -> dict:
    """Start a run of `study` with `budget` training runs in the background (same `out`: resume, e.g.
    with a larger budget). executor: local (default), local-cold, ray or replay:TABLE. planner: mcp
    (default: your queued actions first, then the default policy) or any `run --planner`."""
    return control.start_run(study, budget, out, executor, planner, scale, device)


def status(out: str, wait_s: float = 0.0) -> dict:
    """A run's state (running or not), budget, trials by status, rounds, best so far per arm and the
    actions still queued; wait_s > 0 first waits (at most that long) for the run to end."""
    return control.wait(out, wait_s) if wait_s > 0 else control.status(out)


def findings(out: str) -> dict:
    """The analysis as it stands: the recommendation (verdict, confidence, basis), the ranked
    configurations and the paired comparisons."""
    return {"out": out, **control.findings(out)}


def tuning_evidence(out: str) -> dict:
    """Per arm and searched knob: bracketed, open below/above or at the edge of the space, with the
    runs that would settle it."""
    return {"out": out, "arms": control.tuning_evidence(out)}


def report(out: str, round: int | None = None) -> dict:
    """The final report (markdown), or round `round`'s report (the latest while none is final)."""
    return control.report(out, round)


def propose_action(out: str, action: dict, budget: int | None = None) -> dict:
    """Propose one research action for the run's next round: validated exactly as the loop validates
    a planner's action; queued when valid (accepted, its runs), else rejected with the reasons.
    budget: for a run that has spent its budget, the budget it will be resumed with."""
    return {"out": out, **control.propose(out, action, budget)}


TOOLS = (list_studies, start_run, status, findings, tuning_evidence, report, propose_action)


def build() -> MCPServer:
    server = MCPServer("research-agents", instructions=INSTRUCTIONS)
    for fn in TOOLS:
        server.add_tool(_recorded(fn), name=fn.__name__, description=inspect.getdoc(fn))
    return server


def serve() -> int:
    build().run("stdio")
    return 0


__all__ = ["INSTRUCTIONS", "TOOLS", "build", "serve"]
