"""A deterministic stand-in for an LLM planner's model: reads the round prompt, answers from a fixed policy.

It answers what a careful model would, from the prompt's own text (never from hidden state), so
the benchmark measures what the LLM planners do with sensible answers: per arm asked for,
1. before any result: the arm's start point with its LR doubled (then quadrupled);
2. bracket each knob the tuning evidence says is open (LR first; a bracket fills one slot per
   missing neighbour; with fewer slots left, try the first of its points instead), and while the
   LR is open, also try a factor 4 beyond the leader that way (the sweep expands);
3. replicate the leader on a close call while it rests on fewer than 3 runs;
4. else try the leader's point with its LR moved by a factor 1.41 (up on even rounds, down on odd;
   a repair moves it further), every other knob as the leader's.
Served by tests/openai_stub.py's StubLLM: `StubLLM(default=reply)`.
"""

from __future__ import annotations

import json
import re
from typing import Any

SLOTS = re.compile(r"(\d+) slot\(s\) for arm (\w[\w.-]*\w|\w)")
START = re.compile(r"^arm ([\w.-]+) \(start point: (.*)\):$")
LEADER = re.compile(r"^- ([\w.-]+): leader ([\w.-]+) \((.*)\), mean ([\d.]+) over n=(\d+)")
KNOB = re.compile(r"^  - ([\w.]+) = (\S+): (open below|open above|open both)")
BRACKET = re.compile(r"a bracket would run (.+)$")
PARAM = re.compile(r'([\w.]+)=("[^"]*"|\S+)')


def _params(text: str) -> dict[str, Any]:
    out = {}
    for key, value in PARAM.findall(text):
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _arms(evidence: list[str]) -> dict[str, dict]:
    """Per arm: leader label, params, n, open knobs (with their bracket sizes), close call."""
    arms: dict[str, dict] = {}
    current = None
    for line in evidence:
        if m := LEADER.match(line):
            current = arms[m.group(1)] = {"label": m.group(2), "params": _params(m.group(3)),
                                          "mean": float(m.group(4)), "n": int(m.group(5)), "open": [],
                                          "close": False}
        elif current is not None and (m := KNOB.match(line)) and (b := BRACKET.search(line)):
            current["open"].append((m.group(1), [json.loads(v) for v in b.group(1).split(", ")]))
            if m.group(1) == "lr":
                current["lr_open"] = m.group(3)
        elif current is not None and line.strip().startswith("- close call"):
            current["close"] = True
    return arms


def plan(system_text: str, round_text: str, wanted_text: str, attempt: int) -> list[dict]:
    """The actions for the slots `wanted_text` names, from the system and round prompts."""
    round_no = int(re.search(r"Round (\d+)", round_text).group(1)) if re.search(r"Round (\d+)", round_text) else 0
    evidence = round_text.split("Tuning evidence", 1)[1].split("\n\n", 1)[0].splitlines() \
        if "Tuning evidence" in round_text else []
    arms = _arms(evidence)
    for line in system_text.splitlines():
        if (m := START.match(line)) and m.group(1) not in arms:
            arms[m.group(1)] = {"label": None, "params": _params(m.group(2)), "mean": None, "n": 0, "open": [],
                                "close": False}
    actions = []
    for n, arm in SLOTS.findall(wanted_text):
        slots = int(n)
        info = arms.get(arm)
        if info is None or "lr" not in info["params"]:
            continue

        def tries(factors, why):
            nonlocal slots
            for f in factors:
                if slots <= 0:
                    return
                lr = float(f"{info['params']['lr'] * f:.4g}")
                actions.append({"kind": "try", "arm": arm, "params": {**info["params"], "lr": lr},
                                "rationale": why, "expected": info["mean"] if info["mean"] is not None else 5.0})
                slots -= 1

        if info["label"] is None:
            tries([2.0 * 2 ** attempt, 4.0 * 2 ** attempt], "start the lr sweep upwards")
            continue
        for knob, values in sorted(info["open"], key=lambda k: k[0] != "lr"):
            if slots <= 0 or attempt > 0:
                break
            if len(values) <= slots:
                actions.append({"kind": "bracket", "arm": arm, "knob": knob, "rationale": f"{knob} is open"})
            else:
                actions += [{"kind": "try", "arm": arm, "params": {**info["params"], knob: v},
                             "rationale": f"{knob} is open: one side first", "expected": info["mean"]}
                            for v in values[:slots]]
            slots -= len(values)
        way = {"open above": [4.0], "open below": [0.25], "open both": [4.0, 0.25]}.get(info.get("lr_open"), [])
        tries([f * 2 ** (attempt if f > 1 else -attempt) for f in way], "expand the lr sweep")
        if slots > 0 and info["close"] and info["n"] < 3 and attempt == 0:
            actions.append({"kind": "replicate", "arm": arm, "config": info["label"], "seeds": 1,
                            "rationale": "close call: one more seed for the leader"})
            slots -= 1
        tries([1.41 ** (attempt + k) if (round_no + k) % 2 == 0 else 1.41 ** -(attempt + k) for k in range(1, 9)],
              "refine the leader's lr")
    return actions


def reply(body: dict) -> dict:
    """StubLLM's answer to one chat request."""
    system = next((m["content"] for m in body.get("messages", []) if m.get("role") == "system"), "")
    users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
    round_text = users[0] if users else ""
    last = users[-1] if users else ""
    attempt = len(users) - 1  # a repair conversation carries the round message and the repair
    wanted = last.split("Still needed:", 1)[1] if "Still needed:" in last else round_text.split("\n", 1)[0]
    return {"content": json.dumps({"actions": plan(system, round_text, wanted, attempt)})}


__all__ = ["reply", "plan"]
