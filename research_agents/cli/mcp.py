"""`mcp`: serve the Model Context Protocol on stdio (research_agents/mcp/server.py) until the client
closes it. Needs the `mcp` extra: `pip install 'research-agents[mcp]'`."""

from __future__ import annotations

import argparse

from rich.console import Console

from research_agents.cli.common import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("mcp", help="serve the MCP tools on stdio (list studies, start runs, read them, propose actions)")


def command(args: argparse.Namespace, console: Console) -> int:
    try:
        from research_agents.mcp.server import serve
    except ImportError as e:
        raise UsageError(f"the MCP server needs the official SDK: pip install 'research-agents[mcp]' ({e})") from None
    return serve()


__all__ = ["add_parser", "command"]
