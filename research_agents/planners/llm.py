"""The LLM planner: proposals from any OpenAI-compatible chat API, validated, repaired, recorded.

Each round the model reads a system prompt (role, question, search space with bounds, budget,
rules) and a round prompt (compact history: top configs, last trials, failures, noise floor,
the latest round report and, in hybrid mode, the sampler's own suggestions), both rendered
from the templates in prompts/. It answers a batch of proposals (`ProposalBatch`). Structured
output is asked for as JSON schema; a server that refuses that (llama.cpp) gets `json_object`
with the schema, and one that refuses both gets plain text from which the first JSON value is
read. The mode that worked is kept for the rest of the run.

Every proposal is checked here before the loop sees it: the arm's space (an out-of-bound value
is rejected with its reason, never clamped), every active parameter present, the trial spec,
and duplicates of past trials. The problems go back to the model for a corrected batch, a
bounded number of times; each rejection is recorded (`drain_rejections`, the loop stores them).
Slots the model never filled validly are filled by TPE (origin "tpe") and counted in the report.
LLM output is data: it is parsed as JSON, never executed and never used as a path.

Talking to the service (retries, output modes, accounting) is llm_client.py's job. After its
retries it raises `LLMUnavailable`: the CLI stops with one line and the report (nothing lost;
the same command resumes), or with `--on-llm-error fallback` the classical TPE planner takes
over and the switch is recorded. Every call is kept in the store's metadata "llm_calls", and
each call's transcript in OUT/llm/.
"""

from __future__ import annotations

import json
import os
import re
import string
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError, field_validator

from research_agents.config.space import Param, active_params, config_id
from research_agents.config.study import Study, validate_params
from research_agents.fmt import params_line
from research_agents.planners.base import BasePlanner, PlanningContext
from research_agents.planners.llm_client import LLMClient, LLMConfig, LLMUnavailable
from research_agents.planners.sampler import SamplerPlanner
from research_agents.records import BAD, Proposal, mean_loss, ranked_configs

PROMPT_FILES = ("system", "round", "repair")


# ------------------------------------------------------------------------------ output model


class LLMProposal(BaseModel):
    arm: str
    params: dict[str, bool | int | float | str]
    rationale: str = ""
    expected: str | None = None

    @field_validator("rationale", "expected", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:  # small models answer `expected: 4.9`; keep it as text
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


class ProposalBatch(BaseModel):
    proposals: list[LLMProposal]


def batch_schema(study: Study, arms: list[str] | None = None) -> dict:
    """JSON schema of a ProposalBatch for this study: one branch per arm, bounds in descriptions."""
    branches = []
    for name in arms or list(study.arms):
        space = study.arms[name].space
        props = {}
        for key, p in space.items():
            if p.type == "choice":
                props[key] = {"enum": list(p.choices), "description": p.describe()}
            else:
                props[key] = {"type": "integer" if p.type == "int" else "number", "description": p.describe()}
        always = [k for k, p in space.items() if not p.when]
        branches.append({
            "type": "object",
            "properties": {
                "arm": {"type": "string", "enum": [name]},
                "params": {"type": "object", "properties": props, "required": always,
                           "description": f"parameters of arm {name}: " + "; ".join(
                               f"{k} {p.describe()}" for k, p in space.items())},
                "rationale": {"type": "string", "description": "one short sentence: why this point"},
                "expected": {"type": "string", "description": "the val loss you expect"},
            },
            "required": ["arm", "params", "rationale"],
        })
    item = branches[0] if len(branches) == 1 else {"anyOf": branches}
    return {"type": "object", "properties": {"proposals": {"type": "array", "items": item}},
            "required": ["proposals"]}


def extract_json(text: str) -> Any:
    """The first JSON object or array in a reply (code fences and prose around it allowed)."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        return value
    raise ValueError("no JSON object found in the reply")


def parse_batch(text: str) -> tuple[list[LLMProposal | tuple[Any, str]], dict]:
    """Each item of the reply's batch: an LLMProposal, or (the raw item, why it is not one).

    ValueError (one line) when the reply holds no proposal batch at all. One malformed proposal
    does not sink the others: each is checked on its own.
    """
    value = extract_json(text)
    if isinstance(value, list):
        value = {"proposals": value}
    elif isinstance(value, dict) and "proposals" not in value and "arm" in value:
        value = {"proposals": [value]}
    if not isinstance(value, dict) or not isinstance(value.get("proposals"), list):
        raise ValueError('expected an object {"proposals": [...]}')
    items: list[LLMProposal | tuple[Any, str]] = []
    for item in value["proposals"]:
        try:
            items.append(LLMProposal.model_validate(item))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "proposal"
            items.append((item, f"{where}: {first['msg']}"))
    return items, value


# ------------------------------------------------------------------------------ prompts


def prompts_dir() -> Path:
    env = os.environ.get("RESEARCH_AGENTS_PROMPTS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "prompts"
    return here if here.is_dir() else Path.cwd() / "prompts"


def load_prompts(directory: Path | None = None) -> dict[str, string.Template]:
    directory = directory or prompts_dir()
    out = {}
    for name in PROMPT_FILES:
        path = directory / f"{name}.md"
        if not path.is_file():
            raise ValueError(f"LLM prompt template {path} not found "
                             "(set RESEARCH_AGENTS_PROMPTS to the prompts/ folder)")
        out[name] = string.Template(path.read_text())
    return out


def describe_space(study: Study, arms: list[str]) -> str:
    lines = []
    for name in arms:
        arm = study.arms[name]
        fixed = ", ".join(params_line({k: v}) for k, v in arm.base.items())
        lines.append(f"arm {name}" + (f" (fixed: {fixed})" if fixed else "") + ":")
        lines += [f"  - {k}: {p.describe()}" for k, p in arm.space.items()]
    return "\n".join(lines)


def _wanted_text(wanted: dict[str, int]) -> str:
    return ", ".join(f"{n} for arm {a}" for a, n in wanted.items() if n > 0)


def history_sections(ctx: PlanningContext, arms: list[str], top_k: int = 5, last_n: int = 20) -> dict[str, str]:
    """Compact optimizer state for the round prompt (Centaur: top-5 configs, last 20 trials)."""
    top = []
    for arm in arms:
        ranked = ranked_configs(r for r in ctx.history if r.arm == arm)[:top_k]
        if not ranked:
            top.append(f"- {arm}: no completed run yet")
        for rs in ranked:
            top.append(f"- {arm} {params_line(rs[0].params)}: {mean_loss(rs):.4f} (n={len(rs)})")
    last = [f"- {r.arm} {params_line(r.params)} seed {r.seed} [{r.origin}] {r.status}"
            + (f" val_loss {r.val_loss:.4f}" if r.val_loss is not None else "")
            for r in [x for x in ctx.history if x.status != "running"][-last_n:]]
    bad = [r for r in ctx.history if r.status in BAD][-5:]
    failures = [f"- {r.arm} {params_line(r.params)}: {r.status}: {(r.reason or 'no reason recorded')[:160]}"
                for r in bad]
    noise = (f"seed sd {ctx.noise_sd:.4f}; differences under {2 * ctx.noise_sd:.4f} are noise"
             if ctx.noise_sd is not None else "not measured yet")
    return {"top": "\n".join(top) or "none yet", "last": "\n".join(last) or "none yet",
            "failures": "\n".join(failures) or "none", "noise": noise}


def _render(template: string.Template, values: dict[str, Any]) -> str:
    return template.safe_substitute({k: str(v) for k, v in values.items()})


# ------------------------------------------------------------------------------ the planner


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


class LLMPlanner(BasePlanner):
    """Pure LLM planning (`--planner llm`); HybridPlanner uses `ask` for its share of points."""

    name = "llm"

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

    # -- wiring
    def attach(self, store, out: Path, message: Callable[[str], None] | None = None) -> None:
        """Where calls, transcripts and switches are recorded (the run's store and directory)."""
        self.store, self.out = store, Path(out)
        if message is not None:
            self.message = message
        self.calls = list(store.get_meta("llm_calls", []))
        store.set_meta("llm", self.cfg.public())

    def drain_rejections(self) -> list[tuple[Proposal, str]]:
        out, self._rejections = self._rejections, []
        return out

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
        path.write_text(self.client.scrub(json.dumps(body, indent=1, default=str)))
        return path.name

    def fall_back(self, round_no: int, err: Exception) -> None:
        self.fallen_back = str(err)
        self._meta_append("llm_fallback", {"round": round_no, "reason": str(err), "planner": "tpe"})
        self.message(f"{err}; --on-llm-error fallback: the classical tpe planner plans from round {round_no} "
                     "on (recorded in the report)")

    def note_fill(self, round_no: int, arm: str, n: int) -> None:
        self._meta_append("llm_fills", {"round": round_no, "arm": arm, "n": n, "planner": self.name})
        self.message(f"the LLM gave no valid proposal for {n} slot(s) of arm {arm} after "
                     f"{self.cfg.repairs} repair(s): tpe fills them")

    # -- planning
    def propose(self, ctx: PlanningContext) -> list[Proposal]:
        if self.fallen_back:
            return self.sampler.propose(ctx)
        try:
            got = self.ask(ctx, ctx.wanted)
        except LLMUnavailable as err:
            if self.cfg.on_error != "fallback":
                raise
            self.fall_back(ctx.round, err)
            return self.sampler.propose(ctx)
        need = {a: n - sum(p.arm == a for p in got) for a, n in ctx.wanted.items()}
        need = {a: n for a, n in need.items() if n > 0}
        if not need:
            return got
        fill = self.sampler.propose(replace(ctx, wanted=need,
                                            rejections=[*ctx.rejections, *self._rejections]))
        for arm, n in need.items():
            self.note_fill(ctx.round, arm, n)
        for p in fill:
            p.rationale = f"tpe fill (the LLM gave no valid proposal for this slot): {p.rationale}"
        return got + fill

    def check(self, study: Study, prop: LLMProposal, need: dict[str, int], asked: dict[str, int],
              seen: set[str]) -> tuple[str | None, dict]:
        """(why it is rejected or None, normalized params); "extra" marks a surplus valid proposal."""
        if prop.arm not in study.arms:
            return f"unknown arm {prop.arm!r}; arms: {', '.join(study.arms)}", prop.params
        if prop.arm not in asked:
            return f"arm {prop.arm!r} needs no proposals this round", prop.params
        space = study.arms[prop.arm].space
        problems = validate_params(study, prop.arm, prop.params)
        missing = [k for k in active_params(space, prop.params) if k not in prop.params]
        if missing:
            problems.append(f"missing {', '.join(missing)}: every parameter of the arm needs a value")
        if problems:
            return "; ".join(problems), prop.params
        params = normalize(space, prop.params)
        if config_id(prop.arm, params) in seen:
            return "duplicate of an earlier trial", params
        if need.get(prop.arm, 0) <= 0:
            return "extra", params
        return None, params

    def ask(self, ctx: PlanningContext, wanted: dict[str, int],
            suggestions: list[Proposal] | None = None) -> list[Proposal]:
        """Up to `wanted` valid proposals per arm from the model (repairing bounded times)."""
        wanted = {a: n for a, n in wanted.items() if n > 0}
        if not wanted:
            return []
        study = ctx.study
        arms = list(wanted)
        schema = batch_schema(study, arms)
        seen = {r.config for r in ctx.history}
        # an arm's start point is in the history or accepted this round before the planner is asked
        seen |= {config_id(a, study.arms[a].start) for a in arms if study.arms[a].start is not None}
        system = _render(self.prompts["system"], {
            "question": study.question, "space": describe_space(study, arms), "budget_left": ctx.budget_left})
        hist = history_sections(ctx, arms)
        sugg = ""
        if suggestions:
            sugg = ("\nThe TPE sampler, which owns the search state, suggests these points this round "
                    "(yours replace some of them; propose different points):\n"
                    + "\n".join(f"- {p.arm} {params_line(p.params)}" for p in suggestions) + "\n")
        rejected = ""
        if ctx.rejections:
            rejected = ("\nRejected earlier this round:\n" + "\n".join(
                f"- {p.arm} {params_line(p.params)}: {why}" for p, why in ctx.rejections[-8:]) + "\n")
        report = ctx.round_report.strip()
        if len(report) > self.cfg.report_chars:
            report = report[: self.cfg.report_chars].rsplit("\n", 1)[0] + "\n(... cut)"
        user = _render(self.prompts["round"], {
            "round": ctx.round, "wanted": _wanted_text(wanted), "n_total": sum(wanted.values()),
            "suggestions": sugg, "rejected": rejected, "round_report": report or "(no round finished yet)", **hist})
        base = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        messages = base
        need = dict(wanted)
        accepted: list[Proposal] = []
        for attempt in range(self.cfg.repairs + 1):
            entry = {"round": ctx.round, "attempt": attempt, "arms": dict(need), "model": self.cfg.model}
            try:
                result = self.client.complete(messages, schema)
            except LLMUnavailable as err:
                for f in self.client.failures:
                    self._record_call({**entry, "mode": f["mode"], "prompt_tokens": 0, "completion_tokens": 0,
                                       "latency_s": round(f["latency_s"], 3), "cost": None, "ok": False,
                                       "error": f["error"]})
                self._transcript(ctx.round, {**entry, "messages": messages, "error": str(err),
                                             "failed_tries": self.client.failures})
                raise
            for f in result.failures:
                self._record_call({**entry, "mode": f["mode"], "prompt_tokens": 0, "completion_tokens": 0,
                                   "latency_s": round(f["latency_s"], 3), "cost": None, "ok": False,
                                   "error": f["error"]})
            errors: list[str] = []
            rejected_here: list[dict] = []
            accepted_here: list[dict] = []
            extra = 0
            parsed = None
            try:
                items, parsed = parse_batch(result.text)
            except ValueError as err:
                errors.append(f"the reply is not a valid JSON proposal batch: {err}")
            else:
                for i, lp in enumerate(items, 1):
                    if isinstance(lp, tuple):  # not even proposal-shaped: say why, record what we can
                        raw, why = lp
                        errors.append(f"proposal {i}: {why}")
                        if (isinstance(raw, dict) and isinstance(raw.get("arm"), str)
                                and isinstance(raw.get("params"), dict)):
                            arm, params = raw["arm"][:60], raw["params"]
                            self._rejections.append((Proposal(arm=arm, params=params, origin="llm"), why))
                            rejected_here.append({"arm": arm, "params": params, "reason": why})
                        continue
                    why, params = self.check(study, lp, need, wanted, seen)
                    if why == "extra":
                        extra += 1
                        continue
                    rationale = (lp.rationale or "").strip()[:400]
                    if lp.expected:  # kept on the trial record with the rationale
                        rationale += f" [expected: {lp.expected.strip()[:100]}]"
                    prop = Proposal(arm=lp.arm, params=params, origin="llm", rationale=rationale.strip(),
                                    expected=lp.expected)
                    if why:
                        self._rejections.append((prop, why))
                        rejected_here.append({"arm": lp.arm, "params": lp.params, "reason": why})
                        errors.append(f"proposal {i} ({lp.arm} {json.dumps(lp.params)}): {why}")
                        continue
                    accepted.append(prop)
                    accepted_here.append({"arm": prop.arm, "params": params})
                    seen.add(config_id(prop.arm, params))
                    need[prop.arm] -= 1
                if not items:
                    errors.append("the batch holds no proposal")
            if result.finish_reason == "length":
                errors.append(f"the reply was cut off at the {self.cfg.max_tokens}-token limit: keep each "
                              "rationale to one short sentence")
            need = {a: n for a, n in need.items() if n > 0}
            cost = self.cfg.cost(result.prompt_tokens, result.completion_tokens)
            name = self._transcript(ctx.round, {
                **entry, "mode": result.mode, "messages": messages, "raw_response": result.text,
                "parsed": parsed, "accepted": accepted_here, "rejected": rejected_here, "extra_dropped": extra,
                "validation_errors": errors, "failed_tries": result.failures,
                "finish_reason": result.finish_reason,
                "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
                "latency_s": result.latency_s, "cost": cost})
            self._record_call({**entry, "mode": result.mode, "prompt_tokens": result.prompt_tokens,
                               "completion_tokens": result.completion_tokens, "latency_s": round(result.latency_s, 3),
                               "cost": cost, "ok": True, "error": None, "accepted": len(accepted_here),
                               "rejected": len(rejected_here), "invalid": parsed is None, "transcript": name})
            if not need:
                break
            if not errors:
                errors.append("the batch held fewer proposals than asked for")
            repair = _render(self.prompts["repair"], {"errors": "\n".join(f"- {e}" for e in errors),
                                                      "wanted": _wanted_text(need)})
            # keep the conversation short (small models, small contexts): the last reply and its problems
            messages = [*base, {"role": "assistant", "content": result.text[:3000]},
                        {"role": "user", "content": repair}]
        return accepted


__all__ = ["LLMPlanner", "LLMProposal", "ProposalBatch", "batch_schema", "parse_batch"]
