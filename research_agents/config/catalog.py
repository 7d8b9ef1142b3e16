"""The catalogue of what the seeds claimed and which extra analyses a study may ask for.

Data only, so loading a study can check its `claims` and `analyses` without importing the
statistics that test them (research_agents.analysis.claims implements each claim named here).
"""

from __future__ import annotations


CLAIMS: dict[str, tuple[str, str]] = {
    "muon_beats_adam": (
        'seeds 000/001',
        'Muon reaches a lower validation loss than Adam (5.16 vs 5.55 after tuning both: 7% '
        'better).',
    ),
    "muon_wider_lr_range": (
        'seed 001',
        'Muon tolerates a far wider range of learning rates than Adam (0.02-0.09 vs 0.0007-0.002,'
        " '30x wider').",
    ),
    "lower_muon_momentum_better": (
        'seeds 001 and 002',
        'Lower Muon momentum is better: 0.85-0.9 beat 0.97/0.99 (seed 001); 7/8 beat 15/16 (seed '
        '002).',
    ),
    "ns_3_4_as_good_as_5_plus": (
        'seeds 001 and 002',
        "3 to 4 Newton-Schulz steps are as good as 5 or more (seed 001: 3 vs 5 vs 10 'all "
        "similar'; seed 002: 4 steps match 8 and 16).",
    ),
    "warmup_helps_muon": (
        'seed 001',
        'Muon needs LR warmup: 5% warmup is good, no warmup hurts (5.23 vs 5.19).',
    ),
    "momentum_warmup_helps_muon": (
        'seed 004',
        "A momentum warmup schedule improves on Muon's fixed momentum 0.95 (the research question"
        ' of seed 004).',
    ),
    "muon_higher_svd_entropy": (
        'seed 003',
        'Muon (block or full) gives more diverse update directions than AdamW: higher SVD entropy'
        ' of the weight matrices.',
    ),
}

# analysis name -> report heading (research_agents.analysis.seed_analyses computes them)
ANALYSES: dict[str, str] = {
    "momentum": "Momentum schedules (seed 004)",
    "diagnostics": "Training diagnostics (seed 003)",
}


def claim_text(name: str) -> tuple[str, str, str]:
    """(name, seed source, statement) of a catalogued claim."""
    source, statement = CLAIMS[name]
    return name, source, statement
