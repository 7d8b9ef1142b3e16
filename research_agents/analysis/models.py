"""The findings of a study: one JSON-serialisable object the reports, plots and planners read.

`analysis.findings.analyze` computes it; nothing here computes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_serializer

from research_agents.analysis.stats import Comparison, Decomposition, Effect, LRRange, NoiseFloor, Summary
from research_agents.evidence import ArmEvidence, KnobEvidence
from research_agents.fmt import params_text

Confidence = Literal["high", "moderate", "low", "none"]


class ConfigRow(BaseModel):
    """One configuration (arm + params, any seed), over its finished runs."""

    config: str
    rank: int  # 1 = lowest mean val loss; configs with no ok run come last
    arm: str
    params: dict[str, Any]
    label: str
    status: str  # "ok" when at least one run completed, else e.g. "diverged" or "diverged/failed"
    n: int  # ok runs (the ones the statistics use)
    n_runs: int  # finished runs that spent budget (completed, diverged, failed, timeout)
    seeds: list[int]  # seeds of the ok runs
    summary: Summary  # analyzer.summarize of the ok runs' val losses
    confirm_summary: Summary | None = None  # the ok runs that decide: confirm phase (fresh seeds), or
    # in a point run (no confirmation phase) the named experiment's own seeds
    val_accuracy: float | None = None  # means over ok runs
    val_perplexity: float | None = None
    wall_time_s: float | None = None
    n_diverged: int = 0
    n_failed: int = 0  # failed or timed out
    origins: list[str]
    phases: list[str]
    confirmed: bool  # has confirm-phase runs

    def describe(self) -> str:
        """The configuration for people: its params, or a named experiment's name and params."""
        if self.label.startswith(f"{self.arm} "):
            return params_text(self.params)
        return f"{self.label} ({params_text(self.params)})" if self.params else self.label


class Spread(BaseModel):
    best_config: str | None = None
    best_label: str | None = None
    best_mean: float | None = None
    worst_config: str | None = None
    worst_label: str | None = None
    worst_mean: float | None = None
    gap: float | None = None
    threshold: float | None = None  # 2 x the larger per-config sd of best/worst (pooled fallback)
    pooled_threshold: float | None = None  # 2 x pooled sd
    gap_over_threshold: float | None = None
    separated: bool | None = None  # gap > threshold; None when the noise is not measured
    # (best_config None: nothing completed; best_config == worst_config: one configuration completed)


class ComparisonResult(BaseModel):
    """One requested comparison between two arms' confirmed leaders, paired by seed."""

    arm_a: str
    arm_b: str
    config_a: str | None = None
    config_b: str | None = None
    label_a: str | None = None
    label_b: str | None = None
    params_a: dict[str, Any] | None = None
    params_b: dict[str, Any] | None = None
    comparison: Comparison | None = None  # None when an arm has no confirmed config
    missing: list[str] = Field(default_factory=list)  # the arms without a confirmed config (not compared)


DecompositionStatus = Literal[
    "measured",  # swap runs on the confirmation seeds: the 2x2 decomposition (it may have n 0 if none completed)
    "no swap runs",  # the confirmed leaders differ in shared settings, and no swap runs were made
    "not needed",  # the confirmed leaders share every shared setting: the gap is all optimizer
]


class PairDecomposition(BaseModel):
    """Where a compared pair's gap comes from: its confirmed leaders, what the swap runs exchanged
    (`settings_a`: what arm_a's leader trained with in its swaps, i.e. arm_b's leader's values), and
    the 2x2 decomposition (stats.decompose) when measured."""

    arm_a: str
    arm_b: str
    config_a: str
    config_b: str
    status: DecompositionStatus
    settings_a: dict[str, Any] = Field(default_factory=dict)
    settings_b: dict[str, Any] = Field(default_factory=dict)
    decomposition: Decomposition | None = None


class HowMuch(BaseModel):
    """The recommendation's "by how much" against one beaten arm: the optimizer effect when the pair's
    gap was decomposed (`status` measured), else what the measured gap is (`status` says why)."""

    arm: str  # the winner
    versus: str
    status: DecompositionStatus
    gap: float | None = None  # winner's confirmed advantage in nats (the paired mean difference, > 0: it is better)
    optimizer: Effect | None = None  # measured: the optimizer effect, signed as the winner's advantage
    shared: Effect | None = None
    interaction: Effect | None = None
    settings: list[str] = Field(default_factory=list)  # the shared settings in which the leaders differ


RecommendationCase = Literal[
    "nothing confirmed",  # no configuration has a confirmed mean (leader: the best search result, if any)
    "no comparison",  # a confirmed leader but no comparison could be tested (single arm, or `missing` arms)
    "disagree",  # the candidate has the lowest mean, yet `pair`'s verdict favours the other arm
    "better",  # every comparison of the candidate says it is better (`wins`)
    "mixed",  # better than `won`, no evidence of a difference from `tied`
    "no difference",  # no verdict supports a difference (`pair`: the first comparison)
    "not testable",  # fewer than 2 paired seeds (`pair`)
]


class Leader(BaseModel):
    """An arm's leader as the recommendation names it: its params, mean val loss and n."""

    arm: str
    params: dict[str, Any] = Field(default_factory=dict)
    mean: float | None = None
    n: int = 0


class Pair(BaseModel):
    """One tested comparison: b vs a."""

    arm_a: str
    arm_b: str
    comparison: Comparison


class Versus(BaseModel):
    """The candidate against another arm: that arm, its leader's params, the paired comparison."""

    arm: str
    params: dict[str, Any] = Field(default_factory=dict)
    comparison: Comparison


class SeedsAdvice(BaseModel):
    """What would tell the arms apart: more paired seeds, how many a rank test needs, and a rough
    paired-t sample size for 80% power at alpha 0.05 from the observed effect."""

    pairs_needed: int  # a rank test reaches p < 0.05 from this many pairs
    hedges_g: float | None = None  # the observed effect, when there is one (non-zero)
    pairs_to_detect: int | None = None  # ((1.96 + 0.84) / |g|)^2, rounded up
    n_pairs: int | None = None
    abs_diff: float | None = None
    min_effect: float | None = None
    within_noise: bool = False  # |diff| <= the noise threshold: in practice perhaps equivalent


class UntunedArm(BaseModel):
    """A compared arm with a searched LR-like knob (`lr`, `*_lr`) that is not bracketed, and its part in
    the verdict: an untuned loser (or any untuned arm that did not win) caps the confidence at low; an
    untuned winner only makes its measured advantage a lower bound (tuning can only lower its loss)."""

    arm: str
    role: Literal["winner", "loser", "compared"] = "compared"  # compared: no verdict names a winner
    knobs: list[KnobEvidence] = Field(default_factory=list)  # its LR-like knobs not bracketed (their to_try
    # values are the runs that would settle or measure it)


class TroubledLeader(BaseModel):
    """A confirmed leader with diverged or failed runs (not in its mean)."""

    arm: str
    params: dict[str, Any] = Field(default_factory=dict)
    n_diverged: int = 0
    n_failed: int = 0


class Recommendation(BaseModel):
    """Which arm to use, with which settings, and how sure: a case and its numbers (report/ words it)."""

    case: RecommendationCase
    confidence: Confidence
    decided_on: Literal["confirm", "search"] = "confirm"  # "search": a point run (the experiments' own seeds)
    paired_confidence: Confidence = "none"  # what the comparisons alone say (before the tuning cap)
    winner_arm: str | None = None  # set only when a verdict says that arm is better
    winner_config: str | None = None
    winner_params: dict[str, Any] | None = None
    best_arm: str | None = None  # lowest confirmed mean, whether or not the difference is real
    best_config: str | None = None
    best_params: dict[str, Any] | None = None
    basis: list[Comparison] = Field(default_factory=list)  # the comparisons it rests on
    leader: Leader | None = None  # the candidate (nothing confirmed: the best search result, if any)
    confirm_started: bool = False  # nothing confirmed: confirmation runs were started, none completed
    single_arm: bool = False  # no comparison: the study has one arm
    missing: list[str] = Field(default_factory=list)  # no comparison: the arms without a confirmed config
    pair: Pair | None = None  # disagree, no difference, not testable: the comparison it rests on
    lower_b: int | None = None  # no difference: on how many paired seeds pair.arm_b had the lower loss
    wins: list[Versus] = Field(default_factory=list)  # better, mixed: the comparisons the candidate won
    tied: list[str] = Field(default_factory=list)  # mixed: the arms it cannot be told apart from
    leaders: list[Leader] = Field(default_factory=list)  # no difference, not testable: by confirmed mean
    advice: SeedsAdvice | None = None
    untuned: list[UntunedArm] = Field(default_factory=list)  # compared arms whose LR is not bracketed
    capped: bool = False  # an untuned arm that did not win capped paired_confidence to low
    lower_bound: bool = False  # the winner is untuned, every other compared arm tuned: its advantage is a
    # lower bound and the confidence follows the paired test
    settle_runs: int = 0  # the search runs that would bracket the untuned LR-like knobs
    resume_budget: int | None = None  # the --budget to resume with (those runs plus re-confirmation)
    troubled: list[TroubledLeader] = Field(default_factory=list)
    chosen_among: list[tuple[str, int]] = Field(default_factory=list)  # point run: arms whose leader was
    # chosen among several experiments on the same seeds (arm, how many)
    how_much: list[HowMuch] = Field(default_factory=list)  # better, mixed: per beaten arm, what the advantage
    # measures (the optimizer effect once decomposed)


class OriginStats(BaseModel):
    arm: str = ""
    origin: str
    n_trials: int
    n_ok: int
    n_configs: int
    best_val_loss: float | None = None
    mean_val_loss: float | None = None
    n_diverged: int = 0
    n_failed: int = 0


class EarlyStop(BaseModel):
    """A search run stopped at a rung (research_agents/rungs.py): which, where, why."""

    order: int
    arm: str
    params: dict[str, Any]
    rung: int | None  # % of its steps it trained (what it cost of a full run)
    reason: str | None


class BudgetUse(BaseModel):
    """The budget in full-length runs (a run stopped early counts its share: int while none did)."""

    used: int | float
    total: int | None = None
    left: int | float | None = None
    by_phase: dict[str, int | float]
    by_arm: dict[str, int | float]
    stopped: list[EarlyStop] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _without_no_stops(self, handler) -> dict[str, Any]:
        """summary.json as before early stops existed while none happened (no "stopped": [])."""
        out = handler(self)
        if not self.stopped:
            out.pop("stopped", None)
        return out
    search_budget: int | None = None
    confirm_reserve: int | None = None
    confirm_seeds: list[int] = Field(default_factory=list)


class Findings(BaseModel):
    study: str
    question: str
    correction: str
    decided_on: Literal["confirm", "search"] = "confirm"  # "search": a point run, no confirmation phase
    n_records: int
    configs: list[ConfigRow]
    noise: NoiseFloor
    spread: Spread
    comparisons: list[ComparisonResult]
    recommendation: Recommendation
    lr_sensitivity: dict[str, LRRange]
    by_origin: list[OriginStats]
    budget: BudgetUse
    best_so_far: list[tuple[int, float | None]]  # (search run index from 1, best val loss so far)
    best_so_far_by_arm: dict[str, list[tuple[int, float | None]]]
    tuning: dict[str, ArmEvidence] = Field(default_factory=dict)  # per arm: is each knob bracketed?
    decompositions: list[PairDecomposition] = Field(default_factory=list)  # per compared pair with both
    # leaders confirmed: where its gap comes from (optimizer x shared settings)

    def config(self, config_id: str) -> ConfigRow | None:
        return next((c for c in self.configs if c.config == config_id), None)

    def leaders(self) -> dict[str, ConfigRow]:
        """Each arm's leader: its confirmed leader when there is one, else its best-ranked config."""
        out: dict[str, ConfigRow] = {}
        for c in self.comparisons:
            for arm, cfg in ((c.arm_a, c.config_a), (c.arm_b, c.config_b)):
                if cfg and arm not in out and (row := self.config(cfg)):
                    out[arm] = row
        for row in self.configs:
            if row.arm not in out and row.n:
                out[row.arm] = row
        return out


def confirmed_leader(rows: list[ConfigRow], arm: str) -> ConfigRow | None:
    """The arm's configuration with the lowest mean over the runs that decide (confirmation runs)."""
    conf = [(c.confirm_summary.mean, c) for c in rows if c.arm == arm and c.confirm_summary is not None
            and c.confirm_summary.mean is not None]
    if not conf:
        return None
    return min(conf, key=lambda mc: mc[0])[1]
