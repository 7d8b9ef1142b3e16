"""What an LLM may answer: research actions as data (pydantic models) and their JSON schema.

The model chooses among the default policy's actions: *try* a new point, *replicate* a measured
configuration on more seeds, *bracket* a knob around the arm's leader, *stop* an arm (the loop
confirms the leaders itself). Its reply is parsed as JSON into these models, never executed and
never used as a path; the planner then vets each action against the study and the history.

The schema sent with each request is a discriminated union on "kind", one branch per arm and
kind, with the bounds a server can enforce in constrained decoding (llama.cpp turns the schema
into a grammar): `enum` for choices, arms, knobs and configuration labels, `minimum`/`maximum`
on numbers (plus an `enum` of the values for an int knob with few of them, which llama.cpp's
grammar enforces where it ignores `minimum`/`maximum`), one params branch per combination of the
choices that conditional knobs depend on, and `minItems`/`maxItems` on the list.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from research_agents.config.space import Param, active_params
from research_agents.config.study import Study

MAX_REPLICATE_SEEDS = 3  # seeds one replicate action may ask for
INT_ENUM_MAX = 64  # an int knob with at most this many values also gets an enum of them
RATIONALE_CHARS = 200  # a grammar-constrained model cannot ramble on inside its rationale


class _Action(BaseModel):
    model_config = ConfigDict(extra="ignore")  # small models add fields; what we read is checked

    arm: str
    rationale: str = ""

    @field_validator("rationale", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return "" if v is None else str(v) if isinstance(v, (int, float)) else v


class LLMTry(_Action):
    kind: Literal["try"] = "try"
    params: dict[str, bool | int | float | str]
    expected: str | None = None  # the final val loss the model expects (a number, kept as text)
    short: bool | None = None  # a short exploratory run (it may stop at a rung: research_agents/rungs.py)

    @field_validator("expected", mode="before")
    @classmethod
    def _expected(cls, v: Any) -> Any:  # `expected: 4.9` or "about 4.9": kept as text
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


class LLMReplicate(_Action):
    kind: Literal["replicate"]
    config: str  # a configuration label from the prompt's tables, e.g. "muon-3"
    seeds: int = Field(1, ge=1, le=MAX_REPLICATE_SEEDS)


class LLMBracket(_Action):
    kind: Literal["bracket"]
    knob: str


class LLMStop(_Action):
    kind: Literal["stop"]


class LLMSwap(BaseModel):
    """After confirmation: swap one compared pair's confirmed leaders (each re-run with the other's
    shared settings); `pair` names it as "arm_a/arm_b" (either order)."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["swap"]
    pair: str
    rationale: str = ""

    @field_validator("pair", mode="before")
    @classmethod
    def _pair(cls, v: Any) -> Any:  # ["a", "b"] is read as "a/b"
        return "/".join(map(str, v)) if isinstance(v, (list, tuple)) else v


LLMAction = Annotated[Union[LLMTry, LLMReplicate, LLMBracket, LLMStop], Field(discriminator="kind")]
_ACTION = TypeAdapter(LLMAction)
KINDS = ("try", "replicate", "bracket", "stop")


MAX_REPLY_CHARS = 200_000  # a batch of actions is a few KB; more is not a reply to read
MAX_DEPTH = 24  # an action batch nests 4 deep; deeper is not one (and must never reach a recursive parser)
MAX_STARTS = 64  # positions tried for the first JSON value in prose (each try may scan to the end)


def nesting_depth(text: str) -> int:
    """How deep [ and { nest in `text` outside JSON strings (a linear scan, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def extract_json(text: str) -> Any:
    """The first JSON object or array in a reply (code fences and prose around it allowed; raw line
    breaks inside strings too, which llama.cpp's JSON grammar lets a model write). Bounded: a reply
    over MAX_REPLY_CHARS or nested deeper than MAX_DEPTH is refused (ValueError) before any parsing."""
    text = text.strip()
    if len(text) > MAX_REPLY_CHARS:
        raise ValueError(f"the reply is {len(text)} characters long, more than {MAX_REPLY_CHARS}: not read")
    if (depth := nesting_depth(text)) > MAX_DEPTH:
        raise ValueError(f"the reply nests {depth} levels deep, more than {MAX_DEPTH}: not read")
    try:
        return json.loads(text, strict=False)
    except (json.JSONDecodeError, RecursionError):
        pass
    decoder = json.JSONDecoder(strict=False)
    for k, m in enumerate(re.finditer(r"[{\[]", text)):
        if k >= MAX_STARTS:
            break
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except (json.JSONDecodeError, RecursionError):
            continue
        return value
    raise ValueError("no JSON object found in the reply")


def parse_actions(text: str) -> tuple[list[LLMTry | LLMReplicate | LLMBracket | LLMStop | tuple[Any, str]], Any]:
    """Each item of the reply's batch: an action model, or (the raw item, why it is not one).

    ValueError (one line) when the reply holds no batch at all. One malformed action does not sink
    the others. `{"proposals": [...]}` and items without "kind" but with "params" (a plain point,
    as small models often write) are read as tries.
    """
    value = extract_json(text)
    if isinstance(value, list):
        value = {"actions": value}
    elif isinstance(value, dict) and "actions" not in value and "proposals" not in value and "arm" in value:
        value = {"actions": [value]}
    items = value.get("actions", value.get("proposals")) if isinstance(value, dict) else None
    if not isinstance(items, list):
        raise ValueError('expected an object {"actions": [...]}')
    out: list = []
    for item in items:
        if isinstance(item, dict) and "kind" not in item and "params" in item:
            item = {**item, "kind": "try"}
        try:
            out.append(_ACTION.validate_python(item))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"] if x not in KINDS) or "action"
            out.append((item, f"{where}: {first['msg']}"))
    return out, value


def parse_swaps(text: str, pairs: list[tuple[str, str]]) -> list[LLMSwap]:
    """The swaps a reply chooses, each naming one of `pairs` ("a/b", either order), each pair at most
    once; an empty list chooses none. ValueError (one line) for anything else: the caller falls back."""
    value = extract_json(text)
    items = value.get("actions") if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise ValueError('expected an object {"actions": [...]}')
    known = {frozenset(p): p for p in pairs}
    out: list[LLMSwap] = []
    for item in items:
        try:
            swap = LLMSwap.model_validate(item)
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(f"{'.'.join(str(x) for x in first['loc']) or 'action'}: {first['msg']}") from None
        names = frozenset(swap.pair.split("/"))
        if names not in known:
            raise ValueError(f"swap: {swap.pair!r} is not one of the swappable pairs "
                             f"({', '.join('/'.join(p) for p in pairs)})")
        if any(frozenset(x.pair.split("/")) == names for x in out):
            raise ValueError(f"swap: {swap.pair!r} chosen twice")
        out.append(swap.model_copy(update={"pair": "/".join(known[names])}))
    return out


# ------------------------------------------------------------------------------ schema


def param_schema(p: Param) -> dict:
    """One knob's JSON schema: its type and bounds, as a server may enforce them."""
    if p.type == "choice":
        return {"enum": list(p.choices), "description": p.describe()}
    out: dict[str, Any] = {"type": "integer" if p.type == "int" else "number",
                           "minimum": int(p.low) if p.type == "int" else p.low,
                           "maximum": int(p.high) if p.type == "int" else p.high,
                           "description": p.describe()}
    if p.type == "int" and p.high - p.low < INT_ENUM_MAX:
        out["enum"] = list(range(int(p.low), int(p.high) + 1))
    return out


def params_schema(arm: str, space: dict[str, Param]) -> dict:
    """The schema of an arm's params: every knob with its bounds; where knobs exist only for some
    choices (`when`), one branch per combination of those choices, each requiring exactly the knobs
    active in it, so a grammar cannot leave out a conditional knob or add an inactive one."""
    deps = sorted({d for p in space.values() for d in p.when}, key=list(space).index)
    if any(space[d].type != "choice" for d in deps):
        deps = []  # a condition on a numeric knob: not enumerable; the planner checks it
    branches = []
    for combo in itertools.product(*(space[d].choices for d in deps)):
        fixed = dict(zip(deps, combo))
        active = active_params(space, fixed) if deps else [k for k, p in space.items() if not p.when]
        props = {k: {"const": fixed[k]} if k in fixed else param_schema(space[k])
                 for k in (active if deps else space)}
        branches.append({"type": "object", "properties": props, "required": active,
                         "description": f"every parameter of arm {arm}, each inside its bounds"})
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _branch(kind: str, arm: str, props: dict, required: list[str]) -> dict:
    return {"type": "object",
            "properties": {"kind": {"const": kind}, "arm": {"const": arm}, **props,
                           "rationale": {"type": "string", "maxLength": RATIONALE_CHARS,
                                         "description": "one short sentence: why"}},
            "required": ["kind", "arm", *required, "rationale"]}


def action_schema(study: Study, arms: list[str], n_max: int, labels: dict[str, list[str]],
                  knobs: dict[str, list[str]]) -> dict:
    """JSON schema of the reply: {"actions": [1..n_max actions]}, one branch per arm and kind.

    `labels`: per arm, the configuration labels a replicate may name; `knobs`: per arm, the knobs
    a bracket may name (an arm without either gets no such branch).
    """
    branches = []
    for arm in arms:
        branches.append(_branch("try", arm, {
            "params": params_schema(arm, study.arms[arm].space),
            "expected": {"type": "number", "description": "the final val loss you expect for this point"},
            "short": {"type": "boolean", "description": "true: a short exploratory run, stopped at 25/50/75% of "
                      "its steps when behind the arm's leader there by more than the noise margin"}},
            ["params", "expected"]))
        if labels.get(arm):
            branches.append(_branch("replicate", arm, {
                "config": {"enum": list(labels[arm]), "description": "a measured configuration's label"},
                "seeds": {"type": "integer", "minimum": 1, "maximum": MAX_REPLICATE_SEEDS,
                          "enum": list(range(1, MAX_REPLICATE_SEEDS + 1))}}, ["config", "seeds"]))
        if knobs.get(arm):
            branches.append(_branch("bracket", arm, {"knob": {"enum": list(knobs[arm])}}, ["knob"]))
        branches.append(_branch("stop", arm, {}, []))
    return {"type": "object",
            "properties": {"actions": {"type": "array", "items": {"anyOf": branches},
                                       "minItems": 1, "maxItems": max(1, n_max)}},
            "required": ["actions"]}


def swap_schema(pairs: list[tuple[str, str]]) -> dict:
    """JSON schema of the reply after confirmation: {"actions": [0..len(pairs) swaps]}, each naming one
    of the swappable pairs (an empty list: no swaps)."""
    item = {"type": "object",
            "properties": {"kind": {"const": "swap"}, "pair": {"enum": ["/".join(p) for p in pairs]},
                           "rationale": {"type": "string", "maxLength": RATIONALE_CHARS,
                                         "description": "one short sentence: why"}},
            "required": ["kind", "pair", "rationale"]}
    return {"type": "object",
            "properties": {"actions": {"type": "array", "items": item, "minItems": 0, "maxItems": len(pairs)}},
            "required": ["actions"]}


__all__ = ["LLMTry", "LLMReplicate", "LLMBracket", "LLMStop", "LLMAction", "MAX_REPLICATE_SEEDS",
           "LLMSwap", "parse_swaps", "swap_schema",
           "extract_json", "nesting_depth", "parse_actions", "param_schema", "params_schema", "action_schema"]
