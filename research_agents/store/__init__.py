"""Where trials are recorded: the interface (`BaseStore`) and its backends (`OptunaStore`)."""

from research_agents.store.base import BaseStore, StoreError
from research_agents.store.optuna import OptunaStore, check_url, default_url, distributions, searchable, sqlite_path

__all__ = ["BaseStore", "OptunaStore", "StoreError", "check_url", "default_url", "distributions", "searchable",
           "sqlite_path"]
