"""Analysis: statistics (stats), findings and the recommendation, the seeds' claims and analyses,
and the planning summary. Everything here computes; research_agents.report renders."""
