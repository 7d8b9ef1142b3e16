"""The budget plan: how many runs the search gets per arm and which seeds confirm the leaders.

Every training run counts (search and confirmation alike). A slice is reserved up front to re-run
each arm's leaders on fresh seeds, paired across arms; the noise floor and the final
recommendation come from those repeats.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # early stops (rungs.py): the margin's safety factor over the seed noise; None: every search run
    # trains to the end unless its proposer asks for a short run
    rungs: float | None = None


def split_shares(runs: int, weights: dict[str, float]) -> dict[str, int]:
    """`runs` split across arms by their weights (the study's `share`): each arm its rounded-down
    part, the rounding remainder one run each to the first arms in study order. The one rounding
    rule of the budget (the plan's split and the adaptive allowance both use it)."""
    total = sum(weights.values())
    share = {a: int(runs * w / total) for a, w in weights.items()}
    for a in list(weights)[: runs - sum(share.values())]:
        share[a] += 1
    return share


def make_plan(study: Study, budget: int, confirm_seeds: int | None = None, adaptive: bool = False) -> Plan:
    """Split the budget: confirmation reserve first, then search shares per arm (the split an
    adaptive plan starts from, before any noise is measured)."""
    arms = list(study.arms)
    leaders = study.budget.leaders_per_arm
    n_seeds = confirm_seeds or study.seeds.confirm
    min_search = study.budget.min_search_per_arm * len(arms)
    # shrink the confirmation if the budget cannot hold it, but never below 2 seeds
    while n_seeds > 2 and budget - len(arms) * leaders * n_seeds < min_search:
        n_seeds -= 1
    reserve = len(arms) * leaders * n_seeds
    search = budget - reserve
    if search < min_search:
        raise BadInput(f"--budget {budget} is too small for study {study.name!r}: it needs at least "
                       f"{min_search + len(arms) * leaders * 2} runs ({min_search} search + "
                       f"{len(arms) * leaders * 2} confirmation)")
    share = split_shares(search, {a: study.arms[a].share for a in arms})
    start = study.seeds.confirm_start
    seeds = [s for s in range(start, start + n_seeds + len(study.seeds.search))
             if s not in study.seeds.search][:n_seeds]
    return Plan(budget, seeds, search, share, adaptive)
