"""Reports: markdown, CSV, JSON and figures rendered from research_agents.analysis results."""
