"""Statistics for comparing optimizer configurations across seeds.

Pure functions over numbers: no I/O, no knowledge of trials or stores.  Every
test statistic comes from scipy (``ttest_rel``, ``ttest_ind(equal_var=False)``,
``wilcoxon``, ``mannwhitneyu``, ``bootstrap``, ``false_discovery_control``);
only Holm's step-down adjustment, effect sizes and a few descriptive helpers are
written out here.

Conventions (read these before building a report on the results):

* **Lower loss is better everywhere.**
* Every difference is **b minus a**: ``diff = mean(b) - mean(a)`` (unpaired) or
  ``diff = mean(b_i - a_i)`` over seeds (paired).  A **negative** diff means *b*
  has the lower loss, i.e. *b is better*.  Effect sizes (``cohens_d``,
  ``hedges_g``) and t statistics carry the same sign.
* ``prob_improvement`` is ``P(b < a)``: the probability that *b*'s loss is lower
  than *a*'s (ties count 0.5).  0.5 means no tendency, 1.0 means b always wins.
* Values that do not exist (too few runs, zero variance, ...) are ``None``, never
  NaN or inf, so every result dumps to strict JSON via ``.model_dump()``.

The verdict rule (``apply_correction`` / ``_verdict``) is deliberately
conservative; see its docstring.

One module per topic: ``values`` (None for what does not exist), ``bootstrap``, ``rank``
(smallest reachable p), ``summary``, ``noise`` (noise floor), ``effect`` (effect sizes),
``compare`` (paired and unpaired comparisons, verdicts), ``multiple`` (Holm, BH), ``lr``
(LR sensitivity), ``curves`` (steps to target, stability), ``decompose`` (a leaders' gap as
optimizer x shared-settings effects).  This package re-exports them.
"""

from __future__ import annotations

from research_agents.analysis.stats.compare import VERDICTS, Comparison, Verdict, compare_paired, compare_unpaired
from research_agents.analysis.stats.curves import stability, steps_to_target
from research_agents.analysis.stats.decompose import Decomposition, Effect, decompose
from research_agents.analysis.stats.effect import cohens_d, hedges_correction, hedges_g
from research_agents.analysis.stats.lr import LRRange, lr_sensitivity
from research_agents.analysis.stats.multiple import adjust_pvalues, apply_correction
from research_agents.analysis.stats.noise import NoiseFloor, noise_floor
from research_agents.analysis.stats.rank import (
    mannwhitney_min_p,
    mannwhitney_n_per_arm_needed,
    wilcoxon_min_p,
    wilcoxon_pairs_needed,
)
from research_agents.analysis.stats.summary import Summary, summarize

__all__ = [
    "Decomposition",
    "Effect",
    "decompose",
    "Summary",
    "NoiseFloor",
    "Comparison",
    "LRRange",
    "Verdict",
    "VERDICTS",
    "summarize",
    "noise_floor",
    "compare_paired",
    "compare_unpaired",
    "adjust_pvalues",
    "apply_correction",
    "lr_sensitivity",
    "steps_to_target",
    "stability",
    "cohens_d",
    "hedges_g",
    "hedges_correction",
    "wilcoxon_min_p",
    "mannwhitney_min_p",
    "wilcoxon_pairs_needed",
    "mannwhitney_n_per_arm_needed",
]
