"""A study: the question, its arms and their search spaces, seeds, budget policy and planner settings.

A study is a TOML file in experiments/: a question, a preset (the trainer's run shape), arms
(one per optimizer, each with its own search space: parameters that exist only for Muon live
only in Muon's arm), a budget policy, seeds, planner settings and the comparisons to test.
Parameter names are dotted paths into trainer.TrialSpec (e.g. "momentum_schedule.warmup_steps").
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, StrictInt, ValidationError, model_serializer, model_validator

from research_agents.config import catalog
from research_agents.config.space import Param, Strict, active_params, config_id
from trainer.presets import RUN_PRESETS
from trainer.spec import MAX_SEED, TrialSpec, format_validation_error, set_dotted

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib


ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
KNOB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,7}")


def _never_taken(dep: Param, allowed: list[Any]) -> list[Any]:
    """The values in a `when` list that the knob it depends on can never take."""
    if dep.type == "choice":
        return [v for v in allowed if v not in dep.choices]
    low, high = dep.low, dep.high
    return [v for v in allowed if isinstance(v, bool) or not isinstance(v, (int, float))
            or (low is not None and v < low) or (high is not None and v > high)]


class Tie(Strict):
    """A setting derived from a searched one: `value = params[source] * factor` (e.g. Muon's
    AdamW-leg LR = 0.1 x its Muon LR, so one LR knob scales both legs as AdamW's scales all)."""

    source: str
    factor: float = Field(gt=0.0)
    why: str = ""  # said in the report


class Arm(Strict):
    """One side of the comparison (e.g. Muon or AdamW): fixed settings plus a search space."""

    base: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Param] = Field(default_factory=dict)
    tie: dict[str, Tie] = Field(default_factory=dict)
    share: float = Field(1.0, gt=0.0)  # relative share of the search budget (equal by default)
    # First search trial of the arm, whatever the planner: every planner gets the same start
    # (an LLM's apparent lead often came from evaluating a good default first).
    start: dict[str, Any] | None = None

    def tied(self, params: dict[str, Any]) -> dict[str, Any]:
        """The tied settings for `params` (sources looked up in params, then the arm's base)."""
        out = {}
        for key, t in self.tie.items():
            source = params.get(t.source, self.base.get(t.source))
            if isinstance(source, (int, float)) and not isinstance(source, bool):
                out[key] = round(source * t.factor, 12)
        return out


MAX_CONFIRM = 100  # confirmation seeds per leader, at most (the study's seeds.confirm, --seeds)
SeedValue = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]  # a whole number, never "3" or 3.0


class Seeds(Strict):
    """Every seed a trial may get is a whole number in 0 .. 2**32 - 1 (what torch, numpy and Optuna
    all accept): the search seeds, and the confirmation seeds confirm_start, +1, ... (as many as
    --seeds may ask, 100)."""

    search: list[SeedValue] = Field(default_factory=lambda: [0], min_length=1)
    confirm: StrictInt = Field(5, ge=2, le=MAX_CONFIRM)  # fresh seeds per confirmed config, paired across arms
    confirm_start: StrictInt = Field(1000, ge=0)  # confirmation seeds are confirm_start, +1, ...

    @model_validator(mode="after")
    def _confirm_seeds_fit(self) -> Seeds:
        last = self.confirm_start + MAX_CONFIRM + len(self.search) - 1  # (the plan skips the search seeds)
        if last > MAX_SEED:
            raise ValueError(f"confirm_start {self.confirm_start} is too large: its confirmation seeds would pass "
                             f"{MAX_SEED} (2**32 - 1), the largest seed a trial can take")
        return self


class Budget(Strict):
    leaders_per_arm: int = Field(1, ge=1)  # configs per arm re-run on the confirmation seeds
    min_search_per_arm: int = Field(2, ge=1)


class PlannerSettings(Strict):
    kind: Literal["auto", "policy", "grid", "random", "tpe", "llm", "hybrid"] = "auto"
    trials_per_round: int = Field(4, ge=1)
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1)  # (+1000 per round and arm stays a valid sampler seed)
    tpe_startup_trials: int = Field(3, ge=1)
    llm_share: float = Field(0.3, ge=0.0, le=1.0)
    llm_warmup_trials: int = Field(4, ge=0)


class Point(Strict):
    """A named fixed configuration (the seeds' named experiments).

    `params` are free TrialSpec overrides (dotted keys), not limited to the arm's search space.
    `aliases` are other names of the same configuration (the seeds sometimes ran one config under
    two names, e.g. adam_baseline and adam_lr_0.001); `-e` accepts either.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    arm: str
    params: dict[str, Any] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)


class Scale(Strict):
    """One size of a study (`run --scale NAME`): e.g. "seed" (the seed's own model, data, steps and
    batch) or "cpu" (runs on 2 CPU cores in minutes).

    preset: run preset at this scale (default: the study's); base: TrialSpec overrides layered on
    the study's base; seeds: replaces the study's seeds; points: per-point param overrides at this
    scale, for knobs whose value depends on the size (block sizes, warmup lengths in steps).
    """

    description: str = ""
    preset: str | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    seeds: Seeds | None = None
    points: dict[str, dict[str, Any]] = Field(default_factory=dict)


# How a study treats the AdamW leg (embedding and tied head, norm gains, router: AdamW trains it
# in every arm) across compared arms; the study names its choice, the fairness audit checks it.
CONVENTIONS: dict[str, str] = {
    "leg_searched_in_both": "the AdamW leg's LR (`adamw_lr`) is searched in every compared arm over the same range",
    "leg_fixed_equal": "the AdamW leg's LR is fixed at one value in every compared arm (modded-nanogpt)",
    "wen_ratio": "the Muon arm's leg LR is tied to its LR by a ratio; the AdamW arm has one LR for every "
                 "parameter (Wen et al. 2025)",
    "moonlight_rms": "one LR for every parameter in both arms, Muon's update RMS-matched to AdamW's (Moonlight)",
    "custom": "the study's own choice (the audit lists what differs)",
}
Convention = Literal["leg_searched_in_both", "leg_fixed_equal", "wen_ratio", "moonlight_rms", "custom"]


class Study(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    question: str
    convention: Convention | None = None  # CONVENTIONS: how compared arms treat the AdamW leg
    preset: str = "tiny"
    base: dict[str, Any] = Field(default_factory=dict)  # TrialSpec overrides shared by every arm
    arms: dict[str, Arm] = Field(min_length=1)
    comparisons: list[tuple[str, str]] = Field(default_factory=list)
    seeds: Seeds = Field(default_factory=Seeds)
    budget: Budget = Field(default_factory=Budget)
    planner: PlannerSettings = Field(default_factory=PlannerSettings)
    points: list[Point] = Field(default_factory=list)
    lr_margin: float = Field(0.05, gt=0.0)  # nats: LR range "within margin of the best"
    trial_timeout_s: float = Field(1800.0, gt=0.0)
    # named experiments: `--quick` runs `quick`; `-e` takes point names, aliases or group names
    quick: list[str] = Field(default_factory=list)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    scales: dict[str, Scale] = Field(default_factory=dict)
    scale: str | None = None  # the scale applied by for_scale (None: the study as written)
    claims: list[str] = Field(default_factory=list)  # seed claims the report tests (claims.py)
    analyses: list[str] = Field(default_factory=list)  # extra report analyses (artifacts.py)
    equivalence_margin: float = Field(0.02, gt=0.0)  # nats: "as good as" means within this

    @model_serializer(mode="wrap")
    def _without_unnamed_convention(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A study that names no convention is written without the key, as before the field existed
        (run.json files of older runs read and write back byte for byte)."""
        data = handler(self)
        if isinstance(data, dict) and data.get("convention") is None:
            data.pop("convention", None)
        return data

    def _check_names(self) -> None:
        """Arm and knob names become directory names, store keys and report text: plain identifiers
        only (no path separator, no `..`, no markup), checked where they enter."""
        for arm_name, arm in self.arms.items():
            if not ARM_NAME.fullmatch(arm_name):
                raise ValueError(f"arms: {arm_name!r} is not a usable arm name (letters, digits, _ and -, "
                                 "starting with a letter or digit, at most 64)")
            for key in (*arm.space, *arm.tie):
                if not KNOB_NAME.fullmatch(key):
                    raise ValueError(f"arms.{arm_name}: {key!r} is not a usable parameter name (a dotted path of "
                                     "identifiers, e.g. momentum_schedule.warmup_steps)")

    @model_validator(mode="after")
    def _check(self) -> Study:
        if not self.name.strip("."):  # the name is a directory under experiments/runs/
            raise ValueError(f"name: {self.name!r} is not a usable name (letters, digits, _ . - but not only dots)")
        self._check_names()
        if self.preset not in RUN_PRESETS:
            raise ValueError(f"preset: unknown {self.preset!r}; known: {', '.join(RUN_PRESETS)}")
        for a, b in self.comparisons:
            for arm in (a, b):
                if arm not in self.arms:
                    raise ValueError(f"comparisons: unknown arm {arm!r}")
            if a == b:
                raise ValueError(f"comparisons: {a!r} is compared with itself (a comparison needs two arms)")
        for point in self.points:
            if point.arm not in self.arms:
                raise ValueError(f"points: {point.name} names unknown arm {point.arm!r}")
        self._check_points()
        for arm_name, arm in self.arms.items():
            keys = list(arm.space)
            for key, param in arm.space.items():
                for dep in param.when:
                    if dep not in arm.space or keys.index(dep) > keys.index(key):
                        raise ValueError(f"arms.{arm_name}.space.{key}.when: {dep!r} must be a parameter "
                                         "listed before it in the same space")
                    never = _never_taken(arm.space[dep], param.when[dep])
                    if never:
                        raise ValueError(f"arms.{arm_name}.space.{key}.when: {dep} never takes "
                                         f"{', '.join(map(repr, never))} (a knob that can never be active)")
            for key, t in arm.tie.items():
                if key in arm.space or key in arm.base:
                    raise ValueError(f"arms.{arm_name}.tie.{key}: a tied setting cannot also be searched or fixed")
                if t.source not in arm.space and t.source not in arm.base:
                    raise ValueError(f"arms.{arm_name}.tie.{key}: source {t.source!r} is neither searched nor fixed")
                source = arm.space.get(t.source)
                if (source is not None and source.type == "choice") or isinstance(arm.base.get(t.source), (str, bool)):
                    raise ValueError(f"arms.{arm_name}.tie.{key}: source {t.source!r} is not a number (a tie "
                                     "multiplies its source by a factor)")
            # every arm's fixed settings must make a valid trial spec on their own, and so must
            # its start point (the first trial of every planner) with them
            self.trial_spec(arm_name, {}, seed=0)
            if arm.start is not None:
                problems = validate_params(self, arm_name, arm.start)
                if problems:
                    raise ValueError(f"arms.{arm_name}.start: {problems[0]}")
        for point in self.points:  # a named experiment is a whole trial spec too
            try:
                self.trial_spec(point.arm, point.params, seed=0)
            except ValidationError as err:
                raise ValueError(f"points: {point.name}: {format_validation_error(err)}") from None
        return self

    def _check_points(self) -> None:
        """Names unique (aliases included), no two points the same config, references resolve."""
        names: dict[str, str] = {}
        configs: dict[str, str] = {}
        for p in self.points:
            for n in (p.name, *p.aliases):
                if n in names or n in self.groups:
                    raise ValueError(f"points: name {n!r} is used twice")
                names[n] = p.name
            cid = config_id(p.arm, p.params)
            if cid in configs:
                raise ValueError(f"points: {p.name} is the same configuration as {configs[cid]}; "
                                 "make it an alias of that point")
            configs[cid] = p.name
        for where, refs in (("quick", self.quick), *((f"groups.{g}", v) for g, v in self.groups.items())):
            for n in refs:
                if n not in names:
                    raise ValueError(f"{where}: unknown point {n!r}")
        for field, known in (("claims", catalog.CLAIMS), ("analyses", catalog.ANALYSES)):
            for n in getattr(self, field):
                if n not in known:
                    raise ValueError(f"{field}: unknown {n!r}; known: {', '.join(known)}")
        for scale_name, scale in self.scales.items():
            if scale.preset is not None and scale.preset not in RUN_PRESETS:
                raise ValueError(f"scales.{scale_name}.preset: unknown {scale.preset!r}")
            for n in scale.points:
                if n not in names:
                    raise ValueError(f"scales.{scale_name}.points: unknown point {n!r}")

    def point_index(self) -> dict[str, Point]:
        """Every point by its name and by each of its aliases."""
        return {n: p for p in self.points for n in (p.name, *p.aliases)}

    def select_points(self, names: list[str]) -> list[Point]:
        """Points for `-e` names (point names, aliases or group names), in study order, no repeats.

        Raises ValueError with one line listing the valid names.
        """
        index = self.point_index()
        wanted: set[str] = set()
        for n in names:
            if n in self.groups:
                wanted.update(index[m].name for m in self.groups[n])
            elif n in index:
                wanted.add(index[n].name)
            else:
                valid = ", ".join([*self.groups, *(p.name for p in self.points)]) or "none"
                raise ValueError(f"unknown experiment {n!r} in study {self.name}; valid: {valid}")
        return [p for p in self.points if p.name in wanted]

    def for_scale(self, name: str) -> Study:
        """This study at one of its scales: preset, base, seeds and point params of that scale."""
        if name not in self.scales:
            known = ", ".join(self.scales) or "none (the study defines no scales)"
            raise ValueError(f"--scale: study {self.name} has no scale {name!r}; known: {known}")
        sc = self.scales[name]
        index = self.point_index()
        extra: dict[str, dict[str, Any]] = {}
        for n, params in sc.points.items():
            extra.setdefault(index[n].name, {}).update(params)
        data = self.model_dump(mode="json")
        data.update(preset=sc.preset or self.preset, base={**self.base, **sc.base}, scale=name,
                    points=[{**p.model_dump(mode="json"), "params": {**p.params, **extra.get(p.name, {})}}
                            for p in self.points])
        if sc.seeds is not None:
            data["seeds"] = sc.seeds.model_dump(mode="json")
        return Study.model_validate(data)

    def trial_spec(self, arm: str, params: dict[str, Any], seed: int,
                   preset: str | None = None, overrides: dict[str, Any] | None = None,
                   swapped: dict[str, Any] | None = None) -> TrialSpec:
        """preset -> study base -> arm base -> overrides -> params -> ties -> swapped -> seed, validated.
        `swapped`: a swap run's settings (another arm's leader's shared settings), the last layer, so
        they hold even where this arm ties or fixes the key.

        Built once per distinct input: a trial's spec is asked for when its action is validated,
        when it is trained, predicted and planned around; the same layers give the same (frozen)
        spec. An invalid spec raises ValidationError every time (failures are not kept)."""
        a = self.arms[arm]
        layers = (self.base, a.base, overrides or {}, params, a.tied({**a.base, **params}), swapped or {})
        key = json.dumps([preset or self.preset, seed, *layers], default=repr)  # the layers' order kept
        spec = _SPECS.get(key)
        if spec is None:
            merged: dict[str, Any] = json.loads(json.dumps(RUN_PRESETS[preset or self.preset]))
            for layer in layers:
                for k, value in layer.items():
                    set_dotted(merged, k, value)
            merged["seed"] = seed
            spec = TrialSpec.model_validate(merged)
            if len(_SPECS) >= _SPECS_KEPT:
                _SPECS.clear()
            _SPECS[key] = spec
        return spec


# Study.trial_spec's specs by their inputs (preset, seed and every layer, as JSON): keyed by
# content, not by study, so a study changed in place or loaded twice never gets a stale spec.
_SPECS: dict[str, TrialSpec] = {}
_SPECS_KEPT = 4096


def validate_params(study: Study, arm: str, params: dict[str, Any], check_spec: bool = True,
                    preset: str | None = None, overrides: dict[str, Any] | None = None) -> list[str]:
    """Every reason these params are not a valid point of the arm's space (empty when valid); with
    check_spec, also as a whole trial spec (of the run's preset and overrides, when given)."""
    if arm not in study.arms:
        return [f"unknown arm {arm!r}; arms: {', '.join(study.arms)}"]
    space = study.arms[arm].space
    problems = [f"{k}: not a parameter of arm {arm!r}" for k in params if k not in space]
    for key in active_params(space, params):
        if key in params and (why := space[key].check(params[key])) is not None:
            problems.append(f"{key}: {why}")
    inactive = set(params) & set(space) - set(active_params(space, params))
    problems += [f"{k}: only applies when {space[k].when}" for k in sorted(inactive)]
    if not problems and check_spec:
        try:
            study.trial_spec(arm, params, seed=0, preset=preset, overrides=overrides)
        except ValidationError as err:
            problems.append(f"spec: {format_validation_error(err)}")
    return problems


def load_study(source: str | Path, experiments_dir: Path | None = None) -> Study:
    """A study by file path, or by name from experiments/ (raises ValueError with one line)."""
    path = Path(source)
    if not path.suffix and experiments_dir is not None:
        path = experiments_dir / f"{source}.toml"
    if not path.is_file():
        raise ValueError(f"study {source!r} not found (looked for {path})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None
    data.setdefault("name", path.stem)
    try:
        return Study.model_validate(data)
    except ValidationError as err:
        raise ValueError(f"{path}: {format_validation_error(err)}") from None
