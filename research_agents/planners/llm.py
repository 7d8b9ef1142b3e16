"""The LLM planner: research actions from any OpenAI-compatible chat API, vetted, repaired, recorded.

Each round the model reads a system prompt and a round prompt (llm_prompt.py: the set-up, the
space, the tuning evidence, the measured configurations, curves, noise, failures, open questions,
its own earlier expectations and, in hybrid mode, the sampler's suggestions; bounded in size) and
answers a batch of research actions (llm_actions.py: try, replicate, bracket, stop). Structured
output is asked for as JSON schema; a server that refuses that (llama.cpp) gets `json_object`
with the schema, and one that refuses both gets plain text from which the first JSON value is
read. The mode that worked is kept for the rest of the run.

Every action is vetted here before the loop sees it (the loop validates again): the arm's space
(an out-of-bound value is rejected with its reason, never clamped), every active parameter
present, duplicates of past trials, and near-duplicates (a float knob within NEAR_STEPS grid
steps, the other values equal) of a past trial or of the sampler's suggestion this round: not
new, so not credited to the LLM. A replicate names a measured configuration by its label, a
bracket a knob the tuning evidence leaves open, a stop an arm whose LR is bracketed. The
problems go back to the model for a corrected batch, up to `repairs` times; a batch rejected for
exactly the same reasons as the one before ends the repairs early. Each rejection is recorded
(`drain_rejections`, the loop stores them). Slots the model never filled validly go to TPE
(origin "tpe") and are counted in the report. LLM output is data: parsed as JSON, never executed.

Failures are honest: after its retries the service client raises `LLMUnavailable`, and
`cfg.bad_rounds` rounds in a row without one valid action (a server answering HTTP 200 garbage,
a model that never gets the bounds right) count as the same failure. Then the run stops with one
line and the report (nothing lost; the same command resumes), or with `--on-llm-error fallback`
the classical TPE planner takes over; either is recorded with its round. Every call is kept in
the store's metadata "llm_calls", each round's outcome in "llm_rounds", each call's transcript in
OUT/llm/.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from research_agents import safefs
from research_agents.actions import (
    DUPLICATE,
    Bracket,
    Ledger,
    Proposal,
    Replicate,
    StopArm,
    Swap,
    SwapOption,
    Work,
    slots_left,
)
from research_agents.config.space import Param, active_params, config_id, near_duplicate
from research_agents.fmt import fmt_value, params_line
from research_agents.planners.base import BasePlanner, PlanningContext, default_swaps
from research_agents.planners.llm_actions import RATIONALE_CHARS, LLMBracket, LLMReplicate, LLMStop, LLMTry, \
    action_schema, parse_actions, parse_swaps, swap_schema
from research_agents.planners.llm_client import LLMClient, LLMConfig, LLMUnavailable
from research_agents.planners.llm_prompt import config_labels, load_prompts, repair_message, replicable, \
    round_message, swap_message, system_message
from research_agents.planners.sampler import SamplerPlanner
from research_agents.records import TrialRecord

REPLY_KEEP_CHARS = 3000  # of the model's last reply, carried into the repair conversation


def normalize(space: dict[str, Param], params: dict[str, Any]) -> dict[str, Any]:
    """Valid values in the type the sampler uses (5.0 for an int parameter is 5): never clamps."""
    out = {}
    for key, value in params.items():
        p = space.get(key)
        if p is not None and not isinstance(value, bool) and isinstance(value, (int, float)):
            if p.type == "int" and float(value).is_integer():
                value = int(value)
            elif p.type == "float":
                value = float(value)
        out[key] = value
    return out


# ------------------------------------------------------------------------------ vetting


@dataclass
class Vetting:
    """One round's checks of the model's actions against the study, the history and what this
    round already accepted. `check` gives (why it is rejected, or None; the action). The rules
    every planner's actions share (validity of a point, duplicates, slot costs, the runs a
    replicate may take, a bracket's points) are actions.py's, on its Ledger; what is checked here
    only is the LLM's own: labels, near-duplicates, one replicate/bracket/stop per round, the
    hybrid's strict slots, a stop before the LR is bracketed."""

    ctx: PlanningContext
    wanted: dict[str, int]
    labels: dict[str, str]  # config id -> label
    suggestions: list[Proposal] = field(default_factory=list)
    strict_slots: bool = False  # no action takes more slots than are left (hybrid: the LLM's share)
    ledger: Ledger = field(init=False)  # slots still needed, configurations seen, runs accepted per arm
    points: dict[str, list[tuple[dict[str, Any], str]]] = field(init=False)  # arm -> (params, what it is)
    done: set[tuple[str, str]] = field(init=False)  # (kind, what) of replicates and brackets accepted

    def __post_init__(self) -> None:
        study = self.ctx.study
        seen = {r.config for r in self.ctx.history}
        # an arm's start point is in the history or accepted this round before the planner is asked
        starts = {a: study.arms[a].start for a in study.arms if study.arms[a].start is not None}
        seen |= {config_id(a, p) for a, p in starts.items()}
        self.ledger = Ledger(study, self.ctx.history, self.ctx.evidence, self.ctx.search_left, dict(self.wanted),
                             seen, runs={a: 0 for a in study.arms})
        self.points = {a: [] for a in study.arms}
        for r in self.ctx.history:
            if r.phase == "search":
                self.points[r.arm].append((r.params, f"an earlier trial ({self.labels.get(r.config, r.arm)})"))
        for a, p in starts.items():
            self.points[a].append((p, "the arm's start point"))
        for p in self.suggestions:
            self.points[p.arm].append((p.params, "the sampler's suggestion this round"))
        self.done = set()

    @property
    def need(self) -> dict[str, int]:
        return self.ledger.need

    @property
    def n_seeds(self) -> int:
        return self.ledger.n_seeds

    def check(self, item: LLMTry | LLMReplicate | LLMBracket | LLMStop) -> tuple[str | None, Any]:
        """(None, action) accepted; ("extra", None) surplus (the arm's slots are full: dropped unchecked);
        (why, the Proposal it is recorded as) rejected."""
        study = self.ctx.study
        if item.arm not in study.arms:
            return f"unknown arm {item.arm!r}; arms: {', '.join(study.arms)}", self._raw(item)
        if item.arm not in self.wanted:
            return f"arm {item.arm!r} needs no actions this round", self._raw(item)
        if isinstance(item, LLMStop):
            return self._stop(item)
        if self.need.get(item.arm, 0) <= 0:
            return "extra", None
        if isinstance(item, LLMReplicate):
            return self._replicate(item)
        if isinstance(item, LLMBracket):
            return self._bracket(item)
        return self._try(item)

    def _raw(self, item) -> Proposal:
        params = getattr(item, "params", None)
        if params is None:
            params = ({"config": item.config, "seeds": item.seeds} if isinstance(item, LLMReplicate) else
                      {"knob": item.knob} if isinstance(item, LLMBracket) else {})
        return Proposal(arm=item.arm[:60], params=params, origin="llm", rationale=item.rationale[:400])

    def _try(self, item: LLMTry) -> tuple[str | None, Any]:
        space = self.ctx.study.arms[item.arm].space
        problems = Proposal(arm=item.arm, params=item.params, origin="llm").problems(self.ledger)
        missing = [k for k in active_params(space, item.params) if k not in item.params]
        if missing:
            problems.append(f"missing {', '.join(missing)}: every parameter of the arm needs a value")
        params = normalize(space, item.params)
        prop = Proposal(arm=item.arm, params=params, origin="llm", expected=item.expected, short=item.short,
                        rationale=item.rationale.strip()[:400])
        if problems:
            return "; ".join(problems), prop
        if config_id(item.arm, params) in self.ledger.seen:
            return DUPLICATE, prop
        for other, what in self.points[item.arm]:
            if near_duplicate(space, params, other):
                return (f"near-duplicate of {what} {json.dumps(other, sort_keys=True)}: not a new point "
                        "(a float knob within a factor 1.11, the rest equal)"), prop
        self.points[item.arm].append((params, "a point accepted earlier this round"))
        self.ledger.accept(Work(item.arm, params, list(self.ctx.study.seeds.search), "llm"))
        return None, prop

    def _replicate(self, item: LLMReplicate) -> tuple[str | None, Any]:
        by_label = {label: cid for cid, label in self.labels.items()}
        cid = by_label.get(item.config)
        mine = [r for r in self.ctx.history if r.config == cid and r.arm == item.arm]
        if cid is None or not mine:
            known = [lbl for lbl in self.labels.values() if lbl.startswith(f"{item.arm}-")]
            return (f"replicate: unknown configuration {item.config!r} for arm {item.arm}; labels: "
                    f"{', '.join(known[-12:]) or 'none yet'}"), self._raw(item)
        params = mine[0].params
        if not Replicate.measured(mine, cid):
            return f"replicate: {item.config} has no completed run to repeat", self._raw(item)
        if ("replicate", cid) in self.done:
            return (f"replicate: {item.config} is already replicated this round (ask for more seeds in one "
                    "action)"), self._raw(item)
        if why := Replicate.no_runs_left(self.ledger, item.arm):
            return why, self._raw(item)
        left = self.ledger.runs_left(item.arm)
        seeds = min(item.seeds, left, self.need[item.arm] * self.n_seeds if self.strict_slots else left)
        action = Replicate(arm=item.arm, params=params, seeds=seeds, origin="llm",
                           rationale=(item.rationale.strip()[:400] or f"replicate {item.config}"))
        self.done.add(("replicate", cid))
        self.ledger.count(item.arm, seeds, action.slots(self.ctx.evidence, self.n_seeds))
        return None, action

    def _bracket(self, item: LLMBracket) -> tuple[str | None, Any]:
        action = Bracket(arm=item.arm, knob=item.knob, origin="llm", rationale=item.rationale.strip()[:400])
        ev = self.ctx.evidence.get(item.arm)
        knob = action.knob_evidence(self.ctx.evidence) if ev is not None and ev.leader_config is not None else None
        if knob is None:
            return (f"bracket: {item.knob!r} is not a searched knob of arm {item.arm} with a measured leader"
                    ), self._raw(item)
        if why := Bracket.settled(knob):
            return f"bracket: {why}", self._raw(item)
        if ("bracket", f"{item.arm}:{item.knob}") in self.done:
            return f"bracket: {item.knob} of arm {item.arm} is already bracketed this round", self._raw(item)
        slots = action.slots(self.ctx.evidence, self.n_seeds)
        if self.strict_slots and slots > self.need[item.arm]:
            values = ", ".join(map(fmt_value, knob.to_try))
            return (f"bracket: {item.knob} needs {slots} slots ({values}) and {self.need[item.arm]} "
                    "is left for you this round: try one of those points instead"), self._raw(item)
        self.done.add(("bracket", f"{item.arm}:{item.knob}"))
        for params in action.points(self.ctx.evidence):
            self.points[item.arm].append((params, "a bracket point accepted earlier this round"))
            self.ledger.accept(Work(item.arm, params, list(self.ctx.study.seeds.search), "llm"))
        return None, action

    def _stop(self, item: LLMStop) -> tuple[str | None, Any]:
        if ("stop", item.arm) in self.done:
            return "extra", None
        ev = self.ctx.evidence.get(item.arm)
        if ev is not None and ev.lr_bracketed is False:
            status = ev.knob("lr").status
            return (f"stop: arm {item.arm}'s LR is not bracketed yet ({status}); stopping now would leave it "
                    "untuned"), self._raw(item)
        self.need[item.arm] = 0
        self.done.add(("stop", item.arm))
        return None, StopArm(arm=item.arm, origin="llm", rationale=item.rationale.strip()[:400] or "stop")


def _described(action) -> dict:
    """An accepted or rejected action as the transcript records it."""
    out = {"kind": action.kind, "arm": action.arm}
    for key in ("params", "seeds", "knob"):
        if hasattr(action, key):
            out[key] = getattr(action, key)
    return out


# ------------------------------------------------------------------------------ the planner


class LLMPlanner(BasePlanner):
    """Pure LLM planning (`--planner llm`); HybridPlanner uses `ask` for its share of the slots."""

    name = "llm"
    wants_open_questions = True  # the prompt quotes them

    def __init__(self, cfg: LLMConfig, seed: int = 0, startup_trials: int = 3,
                 client: LLMClient | None = None, prompts: dict[str, string.Template] | None = None):
        self.cfg = cfg
        self.prompts = prompts or load_prompts()
        self.client = client or LLMClient(cfg)
        self.sampler = SamplerPlanner("tpe", seed, startup_trials)  # fills empty slots; the fallback
        self.store = None
        self.out: Path | None = None
        self.message: Callable[[str], None] = lambda m: None
        self.fallen_back: str | None = None
        self._rejections: list[tuple[Proposal, str]] = []
        self.calls: list[dict] = []
        self.rounds: list[dict] = []  # per round asked: valid actions and the last problem

    # -- wiring
    def attach(self, store, out: Path, message: Callable[[str], None] | None = None) -> None:
        """Where calls, transcripts and switches are recorded (the run's store and directory)."""
        self.store, self.out = store, Path(out)
        if message is not None:
            self.message = message
        self.calls = list(store.get_meta("llm_calls", []))
        self.rounds = list(store.get_meta("llm_rounds", []))
        store.set_meta("llm", self.cfg.public())

    def drain_rejections(self) -> list[tuple[Proposal, str]]:
        out, self._rejections = self._rejections, []
        return out

    def unmet(self) -> str | None:
        """Every round the LLM was asked in ended without one valid action (its slots went to tpe),
        under --on-llm-error stop: the run did not have the LLM planner that was asked for."""
        if self.cfg.on_error != "stop" or self.fallen_back or not self.rounds or any(r["valid"] for r in self.rounds):
            return None
        problem = self.rounds[-1].get("problem") or "no reason recorded"
        return (f"LLM endpoint {self.cfg.shown} (model {self.cfg.model}) gave no valid action in any of the "
                f"{len(self.rounds)} round(s) it was asked (tpe filled its slots); last problem: {problem}")

    # -- records
    def public(self) -> dict:
        return self.cfg.public()

    def _meta_append(self, key: str, entry: dict) -> None:
        if self.store is not None:
            self.store.append_meta(key, [entry])

    def _record_call(self, entry: dict) -> None:
        self.calls.append(entry)
        if self.store is not None:
            self.store.set_meta("llm_calls", self.calls)

    def _transcript(self, round_no: int, body: dict) -> str | None:
        if self.out is None:
            return None
        folder = self.out / "llm"
        folder.mkdir(parents=True, exist_ok=True)
        k = 1
        while (folder / f"round-{round_no:02d}-{k}.json").exists():
            k += 1
        path = folder / f"round-{round_no:02d}-{k}.json"
        safefs.write_text(path, self.client.scrub(json.dumps(body, indent=1, default=str)), root=self.out)
        return path.name

    def fall_back(self, round_no: int, err: Exception) -> None:
        self.fallen_back = str(err)
        self._meta_append("llm_fallback", {"round": round_no, "reason": str(err), "planner": "tpe"})
        self.message(f"{err}; --on-llm-error fallback: the classical tpe planner plans from round {round_no} "
                     "on (recorded in the report)")

    def fail(self, round_no: int, err: LLMUnavailable) -> None:
        """An LLM failure, as --on-llm-error says: fall back to TPE (recorded), or record the stop
        and raise (the CLI stops with one line; the same command resumes)."""
        if self.cfg.on_error == "fallback":
            self.fall_back(round_no, err)
            return
        self._meta_append("llm_stop", {"round": round_no, "reason": str(err)})
        raise err

    def note_fill(self, round_no: int, arm: str, n: int) -> None:
        self._meta_append("llm_fills", {"round": round_no, "arm": arm, "n": n, "planner": self.name})
        self.message(f"the LLM gave no valid action for {n} slot(s) of arm {arm} after "
                     f"{self.cfg.repairs} repair(s): tpe fills them")

    def _round_outcome(self, round_no: int, valid: int, problem: str | None) -> None:
        """Record how this round went; `cfg.bad_rounds` rounds in a row without one valid action
        are an LLM failure (raised as LLMUnavailable)."""
        if self.rounds and self.rounds[-1]["round"] == round_no:  # the loop asked again this round
            last = self.rounds[-1]
            last["valid"] += valid
            last["problem"] = problem if valid == 0 else last["problem"]
        else:
            self.rounds.append({"round": round_no, "valid": valid, "problem": problem})
        if self.store is not None:
            self.store.set_meta("llm_rounds", self.rounds)
        streak = 0
        for r in reversed(self.rounds):
            if r["valid"]:
                break
            streak += 1
        if streak >= self.cfg.bad_rounds:
            raise LLMUnavailable(f"LLM endpoint {self.cfg.shown} (model {self.cfg.model}) gave no valid action "
                                 f"in {streak} rounds in a row; last problem: {problem}")

    # -- after confirmation: the swaps
    def choose_swaps(self, options: list[SwapOption], history: list[TrialRecord], round_no: int,
                     budget_left: int) -> list[Swap]:
        """The model chooses which pairs to swap (one call, no repairs); its reply is data: a reply
        that is not a valid choice among `options`, or a failed call, falls back to the default
        choice with the reason recorded (meta `llm_swaps`), never a traceback."""
        default = default_swaps(options, history, round_no, budget_left)
        if not options:
            return default
        if self.fallen_back:
            return self._swap_outcome(round_no, default, f"the LLM planner fell back earlier: {self.fallen_back}")
        entry = {"round": round_no, "attempt": 0, "arms": {}, "model": self.cfg.model, "swap": True}
        messages = [{"role": "user", "content": swap_message(options, budget_left)}]
        try:
            result = self._call(round_no, entry, messages, swap_schema([o.pair for o in options]))
        except LLMUnavailable as err:
            return self._swap_outcome(round_no, default, f"the LLM call failed: {err}")
        problem = result.problem
        chosen: list[Swap] = []
        if problem is None:
            try:
                chosen = [Swap(arm_a=s.pair.split("/")[0], arm_b=s.pair.split("/")[1], origin="llm",
                               rationale=s.rationale[:RATIONALE_CHARS])
                          for s in parse_swaps(result.text, [o.pair for o in options])]
            except ValueError as err:
                problem = str(err)
        self._transcript(round_no, {**entry, "messages": messages, "raw_response": result.text,
                                    "accepted": [c.model_dump() for c in chosen], "problem": problem})
        self._record_call({**entry, "mode": result.mode, "prompt_tokens": result.prompt_tokens,
                           "completion_tokens": result.completion_tokens, "latency_s": round(result.latency_s, 3),
                           "cost": self.cfg.cost(result.prompt_tokens, result.completion_tokens), "ok": True,
                           "error": None, "accepted": len(chosen), "kinds": {"swap": len(chosen)},
                           "rejected": int(problem is not None), "invalid": problem is not None})
        if problem is not None:
            return self._swap_outcome(round_no, default, f"the reply is not a valid swap choice: {problem}")
        return self._swap_outcome(round_no, chosen, None)

    def _swap_outcome(self, round_no: int, chosen: list[Swap], fallback: str | None) -> list[Swap]:
        self._meta_append("llm_swaps", {"round": round_no, "chosen": [f"{s.arm_a}/{s.arm_b}" for s in chosen],
                                        "fallback": fallback})
        if fallback is not None:
            self.message(f"{fallback}; the default swap choice is used (recorded in the run)")
        return chosen

    # -- planning
    def propose(self, ctx: PlanningContext) -> list:
        if self.fallen_back:
            return self.sampler.propose(ctx)
        try:
            got = self.ask(ctx, ctx.wanted)
        except LLMUnavailable as err:
            self.fail(ctx.round, err)
            return self.sampler.propose(ctx)
        need = slots_left(ctx.evidence, len(ctx.study.seeds.search), ctx.wanted, got)
        if not need:
            return got
        fill = self.sampler.propose(replace(ctx, wanted=need, rejections=[*ctx.rejections, *self._rejections]))
        for arm, n in need.items():
            self.note_fill(ctx.round, arm, n)
        for p in fill:
            p.rationale = f"tpe fill (the LLM gave no valid action for this slot): {p.rationale}"
        return got + fill

    def ask(self, ctx: PlanningContext, wanted: dict[str, int], suggestions: list[Proposal] | None = None,
            strict_slots: bool = False) -> list:
        """Up to `wanted` slots of valid actions per arm from the model (repairing a bounded number of
        times); raises LLMUnavailable when the service fails or rounds without a valid action pile up.
        `suggestions`: the sampler's points (a try near one is not new); `strict_slots`: no action may
        take more than the slots left (the hybrid's share: a bracket that needs more is rejected, a
        replicate gets as many seeds as fit), else a bracket may run past this round's slots."""
        wanted = {a: n for a, n in wanted.items() if n > 0}
        if not wanted:
            return []
        arms = list(wanted)
        labels = config_labels(ctx.history)
        vet = Vetting(ctx, wanted, labels, list(suggestions or []), strict_slots)
        base = [{"role": "system", "content": system_message(self.prompts, ctx, arms)},
                {"role": "user", "content": round_message(self.prompts, ctx, wanted, labels, suggestions,
                                                          ctx.rejections)}]
        messages = base
        accepted: list = []
        previous: tuple | None = None
        problem: str | None = None
        for attempt in range(self.cfg.repairs + 1):
            need = {a: n for a, n in vet.need.items() if n > 0}
            entry = {"round": ctx.round, "attempt": attempt, "arms": need, "model": self.cfg.model}
            result = self._call(ctx.round, entry, messages, self._schema(ctx, need, labels))
            errors, keys, taken, rejected, extra, parsed = self._vet_reply(vet, result)
            accepted += taken
            if result.finish_reason == "length":
                errors.append(f"the reply was cut off at the {self.cfg.max_tokens}-token limit: keep each "
                              "rationale to one short sentence")
                keys.append("cut off")
            left = {a: n for a, n in vet.need.items() if n > 0}
            ended = None
            if left and extra:
                errors.append(f"{extra} action(s) dropped: their arm needs nothing more this round")
                keys.append("extra")
            if left and not errors:
                errors.append("the batch held fewer actions than asked for")
                keys.append("fewer")
            if left and tuple(sorted(keys)) == previous:
                ended = "the reply was rejected for the same reasons as the one before: repairs end here"
            previous = tuple(sorted(keys))
            problem = errors[0] if errors else problem
            cost = self.cfg.cost(result.prompt_tokens, result.completion_tokens)
            name = self._transcript(ctx.round, {
                **entry, "mode": result.mode, "messages": messages, "raw_response": result.text,
                "parsed": parsed, "accepted": [_described(a) for a in taken], "rejected": rejected,
                "extra_dropped": extra, "validation_errors": errors, "repairs_ended": ended,
                "failed_tries": result.failures, "finish_reason": result.finish_reason,
                "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
                "latency_s": result.latency_s, "cost": cost})
            kinds: dict[str, int] = {}
            for a in taken:
                kinds[a.kind] = kinds.get(a.kind, 0) + 1
            self._record_call({**entry, "mode": result.mode, "prompt_tokens": result.prompt_tokens,
                               "completion_tokens": result.completion_tokens, "latency_s": round(result.latency_s, 3),
                               "cost": cost, "ok": True, "error": None, "accepted": len(taken), "kinds": kinds,
                               "rejected": len(rejected), "invalid": parsed is None, "transcript": name})
            if not left or ended:
                break
            messages = [*base, {"role": "assistant", "content": result.text[:REPLY_KEEP_CHARS]},
                        {"role": "user", "content": repair_message(self.prompts, errors, left)}]
        self._round_outcome(ctx.round, len(accepted), problem)
        return accepted

    @staticmethod
    def _schema(ctx: PlanningContext, need: dict[str, int], labels: dict[str, str]) -> dict:
        """The reply's schema for the arms that still need slots (a repair asks only for those)."""
        arms = list(need)
        knobs = {a: [k.knob for k in ctx.evidence[a].knobs if k.to_try]
                 for a in arms if a in ctx.evidence and ctx.evidence[a].leader_config is not None}
        return action_schema(ctx.study, arms, sum(need.values()), {a: replicable(ctx, a, labels) for a in arms},
                             knobs)

    def _call(self, round_no: int, entry: dict, messages: list[dict], schema: dict):
        """One completion; failed tries are recorded whether or not the call succeeds."""
        try:
            result = self.client.complete(messages, schema)
        except LLMUnavailable as err:
            for f in self.client.failures:
                self._record_call({**entry, "mode": f["mode"], "prompt_tokens": 0, "completion_tokens": 0,
                                   "latency_s": round(f["latency_s"], 3), "cost": None, "ok": False,
                                   "error": f["error"]})
            self._transcript(round_no, {**entry, "messages": messages, "error": str(err),
                                        "failed_tries": self.client.failures})
            raise
        for f in result.failures:
            self._record_call({**entry, "mode": f["mode"], "prompt_tokens": 0, "completion_tokens": 0,
                               "latency_s": round(f["latency_s"], 3), "cost": None, "ok": False, "error": f["error"]})
        return result

    def _vet_reply(self, vet: Vetting, result) -> tuple[list[str], list[str], list, list[dict], int, Any]:
        """(errors for the model, the same without positions, accepted actions, rejected, surplus, parsed)."""
        errors: list[str] = []
        keys: list[str] = []
        taken: list = []
        rejected: list[dict] = []
        extra = 0
        if result.problem:
            why = f"the reply is not a valid JSON action batch: {result.problem}"
            return [why], [why], taken, rejected, extra, None
        try:
            items, parsed = parse_actions(result.text)
        except ValueError as err:
            why = f"the reply is not a valid JSON action batch: {err}"
            return [why], [why], taken, rejected, extra, None
        if not items:
            errors.append("the batch holds no action")
            keys.append("empty")
        for i, item in enumerate(items, 1):
            if isinstance(item, tuple):  # not even action-shaped: say why, record what we can
                raw, why = item
                errors.append(f"action {i}: {why}")
                keys.append(f"{json.dumps(raw, sort_keys=True, default=str)[:200]}: {why}")
                if isinstance(raw, dict) and isinstance(raw.get("arm"), str) and isinstance(raw.get("params"), dict):
                    prop = Proposal(arm=raw["arm"][:60], params=raw["params"], origin="llm")
                    self._rejections.append((prop, why))
                    rejected.append({"arm": prop.arm, "params": prop.params, "reason": why})
                continue
            why, action = vet.check(item)
            if why == "extra":
                extra += 1
                continue
            if why:
                prop = action  # a rejected action comes back as the Proposal it is recorded as
                self._rejections.append((prop, why))
                rejected.append({"kind": item.kind, "arm": prop.arm, "params": prop.params, "reason": why})
                what = f"{item.kind} {item.arm} {params_line(prop.params)}"
                errors.append(f"action {i} ({what}): {why}")
                keys.append(f"{what}: {why}")
                continue
            taken.append(action)
        return errors, keys, taken, rejected, extra, parsed


__all__ = ["LLMPlanner", "Vetting", "normalize"]
