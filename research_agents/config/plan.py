"""The budget plan: how many runs the search gets per arm and which seeds confirm the leaders.

Every training run counts (search, confirmation and swaps alike). A slice is reserved up front to
re-run each arm's leaders on fresh seeds, paired across arms; the noise floor and the final
recommendation come from those repeats. For each compared pair whose leaders can be trained with
different shared settings (`swap_pairs`: the caller reads it from the fairness audit's freedoms),
a second slice re-runs each confirmed leader with the other's shared settings on the same seeds
(2 runs per confirmation seed per pair); a budget too small to hold it with the search plans no swaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from research_agents.config.study import Study


class BadInput(ValueError):
    """A user error found before anything ran (exit code 2)."""


@dataclass
class Plan:
    budget: int
    confirm_seeds: list[int]  # adaptive: the most seeds a confirmation may use
    search_budget: int
    search_share: dict[str, int]
    # adaptive: the loop sizes the confirmation by the measured noise (at least 3 seeds, at most
    # confirm_seeds) and gives the search what is left, in equal shares per arm
    adaptive: bool = False
    # compared pairs whose leaders' shared settings can differ: each confirmed leader re-run with the
    # other's shared settings on every confirmation seed (SWAP_RUNS runs per pair and seed)
    swap_pairs: list[tuple[str, str]] = field(default_factory=list)
    # early stops (rungs.py): the margin's safety factor over the seed noise; None: every search run
    # trains to the end unless its proposer asks for a short run
    rungs: float | None = None
    # and the late-ranking allowance: LATE x the leader's loss drop from a rung to its end widens
    # that rung's margin (None: rungs.LATE)
    rungs_late: float | None = None

    def swap_reserve(self, n_seeds: int | None = None) -> int:
        """Runs the swaps of every swap pair take on `n_seeds` confirmation seeds (default: the plan's)."""
        n = len(self.confirm_seeds) if n_seeds is None else n_seeds
        return SWAP_RUNS * len(self.swap_pairs) * n


SWAP_RUNS = 2  # per pair and confirmation seed: arm a's leader with b's settings, and b's with a's
SWAP_MIN_SEEDS = 3  # a plan with swaps keeps at least this many confirmation seeds (a t interval needs df >= 2)


def split_shares(runs: int, weights: dict[str, float]) -> dict[str, int]:
    """`runs` split across arms by their weights (the study's `share`): each arm its rounded-down
    part, the rounding remainder one run each to the first arms in study order. The one rounding
    rule of the budget (the plan's split and the adaptive allowance both use it)."""
    total = sum(weights.values())
    share = {a: int(runs * w / total) for a, w in weights.items()}
    for a in list(weights)[: runs - sum(share.values())]:
        share[a] += 1
    return share


def make_plan(study: Study, budget: int, confirm_seeds: int | None = None, adaptive: bool = False,
              swap_pairs: list[tuple[str, str]] | None = None) -> Plan:
    """Split the budget: confirmation reserve first (and the swaps of `swap_pairs` on the same seeds),
    then search shares per arm (the split an adaptive plan starts from, before any noise is measured).
    Swaps that do not fit beside the smallest search and confirmation are not planned (the plan is
    then the one without swaps)."""
    pairs = list(swap_pairs or [])
    if pairs:
        try:
            return _split(study, budget, confirm_seeds, adaptive, pairs)
        except BadInput:
            pass
    return _split(study, budget, confirm_seeds, adaptive, [])


def _split(study: Study, budget: int, confirm_seeds: int | None, adaptive: bool,
           pairs: list[tuple[str, str]]) -> Plan:
    arms = list(study.arms)
    leaders = study.budget.leaders_per_arm
    n_seeds = confirm_seeds or study.seeds.confirm
    min_search = study.budget.min_search_per_arm * len(arms)
    # shrink the confirmation if the budget cannot hold it, but never below 2 seeds
    per_seed = len(arms) * leaders + SWAP_RUNS * len(pairs)  # runs per confirmation seed
    while n_seeds > 2 and budget - per_seed * n_seeds < min_search:
        n_seeds -= 1
    # with swaps the reserve grows by half or more: its seeds shrink (not below SWAP_MIN_SEEDS) until the
    # search keeps half the budget, so the search is not starved before the noise is measured
    while pairs and n_seeds > SWAP_MIN_SEEDS and budget - per_seed * n_seeds < budget // 2:
        n_seeds -= 1
    reserve = per_seed * n_seeds
    search = budget - reserve
    if search < min_search:
        raise BadInput(f"--budget {budget} is too small for study {study.name!r}: it needs at least "
                       f"{min_search + len(arms) * leaders * 2} runs ({min_search} search + "
                       f"{len(arms) * leaders * 2} confirmation)")
    share = split_shares(search, {a: study.arms[a].share for a in arms})
    start = study.seeds.confirm_start
    seeds = [s for s in range(start, start + n_seeds + len(study.seeds.search))
             if s not in study.seeds.search][:n_seeds]
    return Plan(budget, seeds, search, share, adaptive, [(a, b) for a, b in pairs])
