"""trainer: a deterministic Muon/AdamW training library for small dense and MoE language models.

It knows nothing of research_agents; one trial is `python -m trainer run --spec S --out D`.
"""

from trainer.spec import TrialSpec, load_spec

__all__ = ["TrialSpec", "load_spec"]
