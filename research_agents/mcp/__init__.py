"""The MCP server for outside agents (`python -m research_agents mcp`): `control.py` does the work
(studies, runs in the background, reads, vetted proposals queued for the `mcp` planner), `server.py`
exposes it over stdio on the official `mcp` SDK. It sits on top, beside the CLI."""
