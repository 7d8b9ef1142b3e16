"""The budget while a study runs: how many runs each arm's search may still spend, how many seeds
confirm the leaders, which seeds replicate a configuration. Pure arithmetic on a plan
(config/plan.py splits the budget up front), the trial records and the tuning evidence.

Every training run counts, search, confirmation and swaps alike (the swaps of a plan's swap pairs
are held back on the confirmation seeds, like the confirmation). An adaptive plan sizes the confirmation
by the measured noise (MIN_CONFIRM to the plan's most seeds per leader) and gives the search what
is left, split across arms by `config.plan.split_shares` (the plan's own rounding rule).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

from research_agents.config.plan import SWAP_RUNS, Plan, split_shares
from research_agents.config.space import config_id
from research_agents.config.study import Study
from research_agents.evidence import ArmEvidence
from research_agents.records import COUNTED, TrialRecord, ranked_configs, spent

MIN_CONFIRM = 3  # fewest confirmation seeds an adaptive plan sizes down to (paired t needs df >= 2)
Z_SUM = 2.8  # z for a two-sided alpha of 0.05 (1.96) plus z for 80% power (0.84)


def paired_t_size(sd: float, gap: float) -> int:
    """Seeds a paired comparison needs to tell apart two means `gap` apart, each run's noise `sd`:
    n ~ ((z_alpha + z_power) * sd_diff / gap)^2 with sd_diff ~ sqrt(2) sd (normal approximation)."""
    return math.ceil((Z_SUM * math.sqrt(2) * sd / gap) ** 2)


def confirm_count(plan: Plan, evidence: dict[str, ArmEvidence]) -> int:
    """Confirmation seeds per leader: the plan's, or (adaptive plans) as many as the measured noise
    needs to tell the arm leaders apart, between MIN_CONFIRM and the plan's maximum."""
    most = len(plan.confirm_seeds)
    if not plan.adaptive or most <= MIN_CONFIRM:
        return most
    ev = [e for e in evidence.values() if e.leader_mean is not None]
    known = [e.threshold / 2 for e in ev if e.threshold is not None]
    if len(ev) < 2 or not known:
        return most  # the noise is not measured yet: keep the full reserve
    means = sorted(e.leader_mean for e in ev)
    gap = min(b - a for a, b in zip(means, means[1:]))
    # an arm not measured yet is assumed 3x noisier than the noisiest measured one
    sd = max(known) * (3 if len(known) < len(ev) else 1)
    if gap <= 0:
        return most
    return max(MIN_CONFIRM, min(most, paired_t_size(sd, gap)))


def confirm_seeds(plan: Plan, evidence: dict[str, ArmEvidence]) -> list[int]:
    return plan.confirm_seeds[: confirm_count(plan, evidence)]


def leaders(study: Study, records: Iterable[TrialRecord], arm: str) -> list[dict]:
    """The arm's best search configs by mean val loss (completed runs only)."""
    ranked = ranked_configs(r for r in records if r.arm == arm and r.phase == "search")
    return [rs[0].params for rs in ranked[: study.budget.leaders_per_arm]]


def confirmed(records: Iterable[TrialRecord]) -> set[tuple[str, int]]:
    """(config, seed) of every confirmation run that spent budget."""
    return {(r.config, r.seed) for r in records if r.phase == "confirm" and r.status in COUNTED}


def search_allowance(study: Study, plan: Plan, records: list[TrialRecord], evidence: dict[str, ArmEvidence],
                     swap_pairs: list[tuple[str, str]] | None = None) -> dict[str, int]:
    """Search runs each arm may spend in all (fairness: each arm its share of the search budget).
    Adaptive: the budget less the confirmation runs made, less what confirming the current leaders
    still costs (a resumed study may have confirmed others), less a full confirmation for each
    leader an arm does not have yet, less the swaps of the pairs that still need them (`swap_pairs`:
    default the plan's; the snapshot passes those whose current leaders differ in shared settings,
    so a reserve the leaders turn out not to need goes back to the search; a swap reserve the
    budget left can no longer hold in full goes back too: the budget is always spent)."""
    if not plan.adaptive:  # the plan's shares, plus the swap runs of pairs whose leaders need none
        needed = plan.swap_pairs if swap_pairs is None else [p for p in swap_pairs if p in plan.swap_pairs]
        freed = SWAP_RUNS * len(plan.confirm_seeds) * (len(plan.swap_pairs) - len(needed))
        extra = split_shares(freed, {a: study.arms[a].share for a in study.arms}) if freed > 0 else {}
        return {a: n + extra.get(a, 0) for a, n in plan.search_share.items()}
    seeds = confirm_seeds(plan, evidence)
    made = sum(1 for r in records if r.phase == "confirm" and r.status in COUNTED)
    done = confirmed(records)
    swaps = swap_reserve(plan, records, len(seeds), swap_pairs)
    made += swaps_made(records)
    reserve = 0
    for a in study.arms:
        tops = leaders(study, records, a)
        reserve += (study.budget.leaders_per_arm - len(tops)) * len(seeds)
        reserve += sum(1 for params in tops for seed in seeds if (config_id(a, params), seed) not in done)
    searched = spent(records, "search")  # a run stopped early costs its share, as everywhere
    if plan.budget - made - reserve - searched < swaps:
        swaps = 0  # the swaps no longer fit beside the search made: their runs go to the search
    search = max(0, plan.budget - made - reserve - swaps)
    return split_shares(search, {a: study.arms[a].share for a in study.arms})


def swaps_made(records: Iterable[TrialRecord]) -> int:
    """Swap runs that spent budget."""
    return sum(1 for r in records if r.phase == "swap" and r.status in COUNTED)


def swap_reserve(plan: Plan, records: Iterable[TrialRecord], n_seeds: int,
                 pairs: list[tuple[str, str]] | None = None) -> int:
    """Runs still held for the swaps of `pairs` (default: the plan's) on `n_seeds` confirmation
    seeds (none without swap pairs)."""
    pairs = plan.swap_pairs if pairs is None else [p for p in pairs if p in plan.swap_pairs]
    if not pairs:
        return 0
    return max(0, SWAP_RUNS * len(pairs) * n_seeds - swaps_made(records))


def round_slots(study: Study, search_left: dict[str, int]) -> dict[str, int]:
    """Proposals each arm gets this round: the study's trials_per_round in search-seed sets, handed
    round-robin across the arms that have runs left (never the workers: results must not depend
    on them)."""
    n_seeds = len(study.seeds.search)
    left = {a: max(0, n // n_seeds) for a, n in search_left.items()}
    wanted = {a: 0 for a in left}
    slots = max(1, study.planner.trials_per_round // n_seeds)
    while slots > 0 and any(wanted[a] < left[a] for a in left):
        for a in left:
            if slots > 0 and wanted[a] < left[a]:
                wanted[a] += 1
                slots -= 1
    return wanted


def replicate_seeds(study: Study, plan: Plan, records: Iterable[TrialRecord], arm: str, params: dict,
                    n: int) -> list[int]:
    """The next `n` replicate seeds of a configuration: the same pool for every configuration (so
    replicates pair across configs and arms), never a search or confirmation seed."""
    cid = config_id(arm, params)
    have = {r.seed for r in records if r.config == cid and r.phase == "search" and r.status in COUNTED}
    banned = set(plan.confirm_seeds) | set(study.seeds.search)
    pool = (s for s in itertools.count(max(study.seeds.search) + 1) if s not in banned and s not in have)
    return list(itertools.islice(pool, n))


__all__ = ["MIN_CONFIRM", "paired_t_size", "confirm_count", "confirm_seeds", "leaders", "confirmed",
           "search_allowance", "swaps_made", "swap_reserve", "round_slots", "replicate_seeds"]
