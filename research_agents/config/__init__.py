"""What a study asks: search spaces, the study file, the seed catalogue, the budget plan, run forms.

Loading a study imports pydantic and trainer.spec only: no statistics, no plotting, no torch.
"""

from research_agents.config.plan import BadInput, Plan, make_plan
from research_agents.config.space import Param, active_params, config_id
from research_agents.config.study import Arm, Budget, PlannerSettings, Point, Scale, Seeds, Study, load_study, \
    validate_params

__all__ = ["Arm", "BadInput", "Budget", "Param", "Plan", "PlannerSettings", "Point", "Scale", "Seeds", "Study",
           "active_params", "config_id", "load_study", "make_plan", "validate_params"]
