"""Where trials are recorded: the interface (`BaseStore`) and its backends (`OptunaStore`)."""

from research_agents.store.base import BaseStore
from research_agents.store.optuna import OptunaStore, distributions, searchable

__all__ = ["BaseStore", "OptunaStore", "distributions", "searchable"]
