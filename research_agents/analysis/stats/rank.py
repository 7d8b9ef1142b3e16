"""The smallest p a rank test can reach at a given n, and the n it needs to reach alpha."""

from __future__ import annotations

import math


def wilcoxon_min_p(n_pairs: int) -> float:
    """Smallest two-sided p the exact Wilcoxon signed-rank test can give with n non-zero pairs.

    All signs agreeing is the most extreme outcome; under H0 each of the 2**n sign
    patterns is equally likely, and two-sided counts both extremes: ``2 / 2**n``
    (capped at 1).  n=3 -> 0.25, n=5 -> 0.0625, n=6 -> 0.03125.
    """
    if n_pairs < 1:
        return 1.0
    return min(1.0, 2.0 / 2.0**n_pairs)


def mannwhitney_min_p(n1: int, n2: int) -> float:
    """Smallest two-sided p the exact Mann-Whitney U test can give with n1 and n2 runs.

    Complete separation is 1 of ``comb(n1+n2, n1)`` equally likely rankings under
    H0; two-sided: ``2 / comb(n1+n2, n1)`` (capped at 1).  3 vs 3 -> 0.1, 4 vs 4 -> 0.0286.
    """
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def wilcoxon_pairs_needed(alpha: float = 0.05) -> int:
    """Fewest pairs for which the exact two-sided Wilcoxon test can give p < alpha."""
    n = 1
    while wilcoxon_min_p(n) >= alpha:
        n += 1
    return n


def mannwhitney_n_per_arm_needed(alpha: float = 0.05) -> int:
    """Fewest runs per arm (equal arms) for which the exact two-sided Mann-Whitney can give p < alpha."""
    n = 1
    while mannwhitney_min_p(n, n) >= alpha:
        n += 1
    return n
