"""The fairness audit: what each arm was free to tune, and where compared arms differ outside the
hidden-matrix optimizer's own knobs (data only: codes and values; report/fairness.py words it).

Per arm, each knob is *searched* (its range), *tied* (to another knob by a factor: the study's
`tie`, or the trainer's default: in the AdamW arm an unset `adamw_lr` is the LR itself) or *fixed*
(its value, and where it comes from). A knob is the optimizer's *own* when only the hidden-matrix
optimizer reads it (Muon's momentum, Newton-Schulz steps, momentum schedule; each optimizer's
`lr` of the hidden matrices); everything else (the AdamW leg's LR, weight decay, betas, warmup,
the LR schedule) is *shared* and should be equal, or equally free, in compared arms. For each
compared pair the audit lists:
- `asymmetries`: shared knobs whose freedom differs (searched in one arm, fixed in the other;
  different ranges, ties or fixed values), and a parameter group's LR (`group`) that one arm may
  tune and the other may not;
- `differences`: the shared settings in which the pair's leaders (confirmed, or the current ones
  during the search) were trained differently (from their trial specs; the leg LR as trained).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

from pydantic import BaseModel, Field

from research_agents.analysis.models import Findings
from research_agents.config.study import Study

Freedom = Literal["searched", "tied", "fixed"]
LeaderState = Literal["confirmed", "current", "none"]  # confirmed: both of a pair's leaders are confirmed
Group = Literal["hidden", "adamw_leg"]  # whose LR a knob sets: the hidden matrices, or the AdamW leg
Origin = Literal["arm base", "study base", "run override", "preset or default"]  # where a fixed value comes from

# Knobs that only the hidden-matrix optimizer reads (a dotted key or a prefix of one).
OWN: dict[str, tuple[str, ...]] = {
    "muon": ("lr", "momentum", "momentum_schedule", "nesterov", "ns_steps", "ns_variant", "update_scale",
             "block_size"),
    "adamw": ("lr",),
}
# Audited in every arm besides what its study searches, ties or fixes: the LRs, then shared knobs.
SHARED = ("adamw_lr", "weight_decay", "adamw_betas", "adamw_eps", "lr_schedule", "warmup_ratio", "min_lr_ratio",
          "grad_clip")
OWN_SHOWN: dict[str, tuple[str, ...]] = {
    "muon": ("momentum", "momentum_schedule.kind", "nesterov", "ns_steps", "ns_variant", "update_scale"),
    "adamw": (),
}
GROUP_OF: dict[str, Group] = {"lr": "hidden", "adamw_lr": "adamw_leg"}
# Settings of a spec that are not training choices (never a difference between leaders).
NOT_SETTINGS = ("optimizer", "seed", "device", "precision", "compile", "save_checkpoint", "save_checkpoint_every",
                "diagnostics", "log_every")


def is_own(key: str, optimizer: str) -> bool:
    """Whether `key` is one of the hidden-matrix optimizer's own knobs."""
    return any(key == k or key.startswith(k + ".") for k in OWN.get(optimizer, ("lr",)))


class KnobFreedom(BaseModel):
    """One knob of one arm: searched over a range, tied to another knob, or fixed at a value."""

    knob: str
    freedom: Freedom
    own: bool  # the hidden-matrix optimizer's own knob (not shared with the other arm)
    moves: bool  # the search changes it: searched, or tied to a knob that moves
    # searched
    type: str | None = None  # float | int | choice
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None
    when: dict[str, list[Any]] = Field(default_factory=dict)
    # tied
    source: str | None = None
    factor: float | None = None
    by: Literal["study", "trainer default"] | None = None
    # fixed
    value: Any = None
    origin: Origin | None = None

    def same_freedom(self, other: KnobFreedom) -> bool:
        """The same freedom: same kind and range, tie (source and factor) or fixed value."""
        if self.freedom != other.freedom:
            return False
        if self.freedom == "searched":
            return (self.type, self.low, self.high, self.log, self.choices, self.when) == \
                (other.type, other.low, other.high, other.log, other.choices, other.when)
        if self.freedom == "tied":
            return self.source == other.source and _same(self.factor, other.factor)
        return _same(self.value, other.value)


class ArmFreedom(BaseModel):
    arm: str
    optimizer: str
    knobs: list[KnobFreedom]

    def knob(self, key: str) -> KnobFreedom | None:
        return next((k for k in self.knobs if k.knob == key), None)


class Asymmetry(BaseModel):
    """A shared knob (or a parameter group's LR) over which the two arms have different freedom."""

    knob: str
    group: Group | None = None  # set when the knob is a parameter group's LR
    a: KnobFreedom
    b: KnobFreedom
    tunable_in: list[str] = Field(default_factory=list)  # group LR: the arms in which the search moves it


class Difference(BaseModel):
    """A shared setting in which the two leaders were trained differently."""

    knob: str
    group: Group | None = None
    value_a: Any = None
    value_b: Any = None


class PairAudit(BaseModel):
    arm_a: str
    arm_b: str
    leaders: LeaderState
    params_a: dict[str, Any] | None = None
    params_b: dict[str, Any] | None = None
    asymmetries: list[Asymmetry] = Field(default_factory=list)
    differences: list[Difference] = Field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.asymmetries and not self.differences


MissCode = Literal["leg_not_searched", "leg_ranges_differ", "leg_not_fixed", "leg_values_differ", "leg_not_ratio",
                   "adamw_not_one_lr", "leg_not_shared_lr", "not_rms_matched"]


class ConventionMiss(BaseModel):
    """One way a study does not follow the convention it names (config.study.CONVENTIONS)."""

    code: MissCode
    arm: str | None = None  # the arm concerned (None: the pair as a whole)
    arm_b: str | None = None  # the pair's other arm, for codes about a pair


class Audit(BaseModel):
    arms: list[ArmFreedom]
    pairs: list[PairAudit]
    convention: str | None = None  # the study's named convention for the AdamW leg (None: it names none)
    misses: list[ConventionMiss] = Field(default_factory=list)  # where the study does not follow it

    @property
    def equal(self) -> bool:
        """Every compared pair had equal freedom over shared settings, and its leaders differ in none."""
        return all(p.equal for p in self.pairs)


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool) \
            and not isinstance(y, bool):
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-15)
    return x == y


def _knob_freedom(study: Study, arm: str, key: str, preset: str | None, overrides: dict[str, Any]) -> KnobFreedom:
    a = study.arms[arm]
    spec = study.trial_spec(arm, {}, seed=0, preset=preset, overrides=overrides)
    own = is_own(key, spec.optimizer)
    if key in a.space:
        p = a.space[key]
        return KnobFreedom(knob=key, freedom="searched", own=own, moves=True, type=p.type, low=p.low,
                           high=p.high, log=p.log, choices=p.choices, when=p.when)
    if key in a.tie:
        t = a.tie[key]
        return KnobFreedom(knob=key, freedom="tied", own=own, moves=False, source=t.source, factor=t.factor,
                           by="study")
    if key == "adamw_lr" and spec.adamw_lr is None and spec.optimizer == "adamw":  # the leg LR is `lr`
        return KnobFreedom(knob=key, freedom="tied", own=own, moves=False, source="lr", factor=1.0,
                           by="trainer default")
    value = spec.leg_lr if key == "adamw_lr" else spec.get(key)
    origin: Origin = ("run override" if key in overrides else "arm base" if key in a.base
              else "study base" if key in study.base else "preset or default")
    return KnobFreedom(knob=key, freedom="fixed", own=own, moves=False, value=_plain(value), origin=origin)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return list(value) if isinstance(value, tuple) else value


def _arm_keys(study: Study, arm: str, optimizer: str, shared_extra: list[str]) -> list[str]:
    a = study.arms[arm]
    keys = ["lr", "adamw_lr", *a.space, *a.tie, *(k for k in a.base if k != "optimizer"), *SHARED, *shared_extra,
            *OWN_SHOWN.get(optimizer, ())]
    return list(dict.fromkeys(keys))


def arm_freedoms(study: Study, preset: str | None = None,
                 overrides: dict[str, Any] | None = None) -> list[ArmFreedom]:
    """Per arm, each knob's freedom: what it searches, ties and fixes, and the audited defaults."""
    overrides = overrides or {}
    optimizers = {arm: study.trial_spec(arm, {}, seed=0, preset=preset, overrides=overrides).optimizer
                  for arm in study.arms}
    shared_extra = [k for arm, a in study.arms.items() for k in (*a.space, *a.tie, *a.base, *study.base)
                    if k != "optimizer" and not any(is_own(k, o) for o in set(optimizers.values()))]
    out = []
    for arm in study.arms:
        knobs = [_knob_freedom(study, arm, k, preset, overrides)
                 for k in _arm_keys(study, arm, optimizers[arm], shared_extra)]
        by_key = {k.knob: k for k in knobs}
        for k in knobs:  # a tie moves when its source does (a chain of ties followed to its end)
            seen: set[str] = set()
            t = k
            while t.freedom == "tied" and t.source is not None and t.source not in seen:
                seen.add(t.source)
                t = by_key.get(t.source) or _knob_freedom(study, arm, t.source, preset, overrides)
            k.moves = t.freedom == "searched"
        out.append(ArmFreedom(arm=arm, optimizer=optimizers[arm], knobs=knobs))
    return out


def _asymmetries(fa: ArmFreedom, fb: ArmFreedom) -> list[Asymmetry]:
    out = []
    for key in dict.fromkeys([k.knob for k in fa.knobs] + [k.knob for k in fb.knobs]):
        ka, kb = fa.knob(key), fb.knob(key)
        if ka is None or kb is None or is_own(key, fa.optimizer) or is_own(key, fb.optimizer):
            continue
        if not ka.same_freedom(kb):
            out.append(Asymmetry(knob=key, group=GROUP_OF.get(key), a=ka, b=kb,
                                 tunable_in=[f.arm for f, k in ((fa, ka), (fb, kb)) if k.moves]))
    # each optimizer's own hidden-matrix LR: asymmetric only when one arm may tune it and the other not
    ka, kb = fa.knob("lr"), fb.knob("lr")
    if ka is not None and kb is not None and ka.moves != kb.moves:
        out.insert(0, Asymmetry(knob="lr", group="hidden", a=ka, b=kb,
                                tunable_in=[f.arm for f, k in ((fa, ka), (fb, kb)) if k.moves]))
    return out


def _differences(study: Study, a: str, pa: dict[str, Any], b: str, pb: dict[str, Any],
                 preset: str | None, overrides: dict[str, Any]) -> list[Difference]:
    sa = study.trial_spec(a, pa, seed=0, preset=preset, overrides=overrides)
    sb = study.trial_spec(b, pb, seed=0, preset=preset, overrides=overrides)
    fa, fb = sa.flat(), sb.flat()
    fa["adamw_lr"], fb["adamw_lr"] = sa.leg_lr, sb.leg_lr  # the leg LR as trained
    out = []
    for key in dict.fromkeys([*fa, *fb]):
        if any(key == k or key.startswith(k + ".") for k in NOT_SETTINGS):
            continue
        if is_own(key, sa.optimizer) or is_own(key, sb.optimizer):
            continue
        if not _same(fa.get(key), fb.get(key)):
            out.append(Difference(knob=key, group=GROUP_OF.get(key), value_a=fa.get(key), value_b=fb.get(key)))
    return out


def _leg_is_lr(f: ArmFreedom) -> bool:
    """The arm's leg LR is its hidden matrices' LR itself: tied to `lr` at 1x (by the study or the
    trainer), or both fixed at one value."""
    k, lr = f.knob("adamw_lr"), f.knob("lr")
    if k is None:
        return False
    if k.freedom == "tied":
        return k.source == "lr" and _same(k.factor, 1.0)
    return k.freedom == "fixed" and lr is not None and lr.freedom == "fixed" and _same(k.value, lr.value)


def convention_misses(convention: str | None, freedoms: dict[str, ArmFreedom],
                      pairs: list[tuple[str, str]]) -> list[ConventionMiss]:
    """Where the study's freedoms do not follow its named convention (none when it names none or `custom`)."""
    out: list[ConventionMiss] = []
    for a, b in pairs:
        fa, fb = freedoms[a], freedoms[b]
        la, lb = fa.knob("adamw_lr"), fb.knob("adamw_lr")
        if convention == "leg_searched_in_both":
            out += [ConventionMiss(code="leg_not_searched", arm=f.arm) for f, k in ((fa, la), (fb, lb))
                    if k is None or k.freedom != "searched"]
            if la is not None and lb is not None and la.freedom == lb.freedom == "searched" and not la.same_freedom(lb):
                out.append(ConventionMiss(code="leg_ranges_differ", arm=a, arm_b=b))
        elif convention == "leg_fixed_equal":
            out += [ConventionMiss(code="leg_not_fixed", arm=f.arm) for f, k in ((fa, la), (fb, lb))
                    if k is None or k.freedom != "fixed"]
            if la is not None and lb is not None and la.freedom == lb.freedom == "fixed" and not la.same_freedom(lb):
                out.append(ConventionMiss(code="leg_values_differ", arm=a, arm_b=b))
        elif convention == "wen_ratio":
            for f, k in ((fa, la), (fb, lb)):
                if f.optimizer == "adamw" and not _leg_is_lr(f):
                    out.append(ConventionMiss(code="adamw_not_one_lr", arm=f.arm))
                elif f.optimizer != "adamw" and (k is None or k.freedom != "tied" or k.source != "lr"):
                    out.append(ConventionMiss(code="leg_not_ratio", arm=f.arm))
        elif convention == "moonlight_rms":
            out += [ConventionMiss(code="leg_not_shared_lr", arm=f.arm) for f in (fa, fb) if not _leg_is_lr(f)]
            for f in (fa, fb):
                scale = f.knob("update_scale")
                if f.optimizer == "muon" and (scale is None or scale.value != "match_rms_adamw"):
                    out.append(ConventionMiss(code="not_rms_matched", arm=f.arm))
    return [m for i, m in enumerate(out) if m not in out[:i]]


def leader_differences(study: Study, a: str, pa: dict[str, Any], b: str, pb: dict[str, Any],
                       preset: str | None = None, overrides: dict[str, Any] | None = None) -> list[Difference]:
    """The shared settings in which leader `pa` of arm `a` and `pb` of arm `b` are trained differently
    (outside the hidden-matrix optimizers' own knobs; the leg LR as trained): what a swap exchanges."""
    return _differences(study, a, pa, b, pb, preset, overrides or {})


def swap_pairs(study: Study, preset: str | None = None,
               overrides: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """The compared pairs whose leaders can be trained with different shared settings: a shared knob
    the search moves in either arm (searched, or tied to a searched knob), or one whose freedom
    differs between the two (range, tie or fixed value). Their swaps are planned into the budget."""
    freedoms = {f.arm: f for f in arm_freedoms(study, preset, overrides)}
    pairs = list(study.comparisons) or list(itertools.combinations(list(study.arms), 2))
    out = []
    for a, b in pairs:
        fa, fb = freedoms[a], freedoms[b]
        shared = [k for k in dict.fromkeys([k.knob for k in fa.knobs] + [k.knob for k in fb.knobs])
                  if not is_own(k, fa.optimizer) and not is_own(k, fb.optimizer)]
        moves = any(k.moves for f in (fa, fb) for k in f.knobs if k.knob in shared)
        if moves or any(x.knob != "lr" for x in _asymmetries(fa, fb)):
            out.append((a, b))
    return out


def fairness_audit(study: Study, fnd: Findings | None = None, preset: str | None = None,
                   overrides: dict[str, Any] | None = None) -> Audit:
    """The audit of `study` (run with `preset` and spec `overrides`); with findings, the leaders'
    differences too (each comparison's confirmed leaders, else each arm's current leader)."""
    overrides = overrides or {}
    freedoms = {f.arm: f for f in arm_freedoms(study, preset, overrides)}
    pairs = list(study.comparisons) or list(itertools.combinations(list(study.arms), 2))
    leaders = fnd.leaders() if fnd is not None else {}
    confirmed = {}
    for c in (fnd.comparisons if fnd is not None else []):
        confirmed[(c.arm_a, c.arm_b)] = c.config_a is not None and c.config_b is not None
    out = []
    for a, b in pairs:
        pa = leaders[a].params if a in leaders else None
        pb = leaders[b].params if b in leaders else None
        state: LeaderState = "none" if pa is None or pb is None else "confirmed" if confirmed.get((a, b)) else "current"
        pair = PairAudit(arm_a=a, arm_b=b, leaders=state, params_a=pa, params_b=pb,
                         asymmetries=_asymmetries(freedoms[a], freedoms[b]))
        if pa is not None and pb is not None:
            pair.differences = _differences(study, a, pa, b, pb, preset, overrides)
        out.append(pair)
    return Audit(arms=list(freedoms.values()), pairs=out, convention=study.convention,
                 misses=convention_misses(study.convention, freedoms, pairs))


__all__ = ["Audit", "ArmFreedom", "Asymmetry", "ConventionMiss", "Difference", "KnobFreedom", "PairAudit",
           "arm_freedoms", "convention_misses", "fairness_audit", "is_own", "leader_differences", "swap_pairs"]
