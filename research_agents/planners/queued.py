"""The queued planner (`--planner mcp`): research actions proposed from outside the run (the MCP
server, research_agents/mcp/) are taken first, the default policy plans the rest.

An outside agent's action reaches a run through its queue, OUT/mcp/queue.jsonl: one JSON object a
line, {"id", "action", "time"}, `action` a research action of actions.py (try, replicate, bracket,
stop) with origin "mcp". The MCP server appends an action only after vetting it exactly as the loop
will (`actions.expand` on a `Ledger` of the run's store); each round this planner hands the loop the
queued actions of the arms that want slots, in the order they were queued, before asking the
policy for the slots they leave (as the LLM planner hands its actions before TPE's fill). The loop
validates them again like any planner's, so an action the run has overtaken meanwhile (a duplicate,
an arm out of runs) is rejected with its reason recorded, with origin "mcp". Every action taken is
recorded in the store's meta "mcp_actions" (its id, round and the action), so it is taken once and a
resumed run does not take it again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from research_agents.actions import Action, slots_left
from research_agents.planners.base import BasePlanner, PlanningContext
from research_agents.planners.policy import PolicyPlanner

QUEUE_DIR = "mcp"
QUEUE_FILE = "queue.jsonl"
TAKEN_META = "mcp_actions"
ACTION = TypeAdapter(Action)


def queue_path(out: Path) -> Path:
    return Path(out) / QUEUE_DIR / QUEUE_FILE


def parse_action(data: Any) -> Any:
    """A research action from JSON data, its origin "mcp" (pydantic ValidationError when it is not one)."""
    if not isinstance(data, dict):
        raise ValueError("an action is a JSON object with a kind: try, replicate, bracket or stop")
    return ACTION.validate_python({**data, "origin": "mcp"})


def read_queue(out: Path) -> list[dict]:
    """Every entry queued in OUT (a partial last line, being written, is left for the next read)."""
    path = queue_path(out)
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "id" in entry and "action" in entry:
            entries.append(entry)
    return entries


class QueuedPlanner(BasePlanner):
    """Queued outside actions first (origin "mcp"), then the default policy."""

    name = "mcp"
    sizes_confirmation = True  # as the policy it falls back to
    pure = False  # it consumes its queue: never asked ahead

    def __init__(self, seed: int = 0, startup_trials: int = 3):
        self.policy = PolicyPlanner(seed, startup_trials)
        self.out: Path | None = None
        self.store = None
        self.message: Callable[[str], None] = lambda m: None
        self.taken: set[str] = set()

    def attach(self, store, out: Path, message: Callable[[str], None] | None = None) -> None:
        self.store, self.out = store, Path(out)
        if message is not None:
            self.message = message
        self.taken = {str(e.get("id")) for e in store.get_meta(TAKEN_META, []) or []}

    def pending(self) -> list[dict]:
        return [e for e in read_queue(self.out) if str(e["id"]) not in self.taken] if self.out is not None else []

    def propose(self, ctx: PlanningContext) -> list:
        n_seeds = len(ctx.study.seeds.search)
        actions: list = []
        for entry in self.pending():
            try:
                action = parse_action(entry["action"])
            except (ValueError, ValidationError) as e:  # (vetted when queued: only a hand-edited queue)
                self._take(entry, ctx.round, f"not an action: {' '.join(str(e).split())[:200]}")
                continue
            left = slots_left(ctx.evidence, n_seeds, ctx.wanted, actions)
            if action.arm in ctx.study.arms and action.arm not in ctx.wanted:
                continue  # its arm plans nothing this round: it waits
            if not action.ends_arm and left.get(action.arm, 0) <= 0 and action.arm in ctx.wanted:
                continue  # the arm's slots this round are full: it waits for the next
            actions.append(action)
            self._take(entry, ctx.round, None)
            self.message(f"mcp: round {ctx.round} takes queued action {entry['id']}: {action.kind} {action.arm}")
        need = slots_left(ctx.evidence, n_seeds, ctx.wanted, actions)
        return actions + (self.policy.propose(replace(ctx, wanted=need)) if need else [])

    def _take(self, entry: dict, round_no: int, problem: str | None) -> None:
        self.taken.add(str(entry["id"]))
        if self.store is not None:
            self.store.append_meta(TAKEN_META, [{"id": entry["id"], "round": round_no, "action": entry["action"],
                                                 "problem": problem}])


__all__ = ["ACTION", "QUEUE_DIR", "QUEUE_FILE", "TAKEN_META", "QueuedPlanner", "parse_action", "queue_path",
           "read_queue"]
