"""The argument parser and the dispatch to one module per command (run, report, status, list, mcp)."""

from __future__ import annotations

import argparse
import sys

from research_agents.cli import list as list_cmd
from research_agents.cli import mcp, report, run, status
from research_agents.cli.common import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_OK, UsageError, experiments_dir
from research_agents.config.plan import BadInput
from research_agents.redact import mask_urls
from research_agents.safefs import UnsafePath, write_failure


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]  # one line, exit 2, as for every other bad input
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="research-agents", description="Optimizer research that runs itself.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run.add_parser(sub)
    report.add_parser(sub)
    status.add_parser(sub)
    list_cmd.add_parser(sub)
    mcp.add_parser(sub)
    return parser


def _tolerant_streams() -> None:
    """A character the terminal's encoding lacks (LANG=C: ASCII) is printed escaped, never a crash."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    _tolerant_streams()
    # long lines stay whole in logs and pipes; tables get room when there is no terminal to fit
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as e:  # --help
        return int(e.code or 0)
    commands = {"run": run.command, "report": report.command, "status": status.command, "list": list_cmd.command,
                "mcp": mcp.command}
    try:
        return commands[args.command](args, console)
    except (UsageError, BadInput, UnsafePath) as e:
        print(f"error: {mask_urls(str(e))}", file=sys.stderr)  # no credentials of any URL on the console
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # a second Ctrl-C (SIGTERM, SIGHUP) while a stopped run cleans up, or one outside a run
        print("interrupted: stopped at once; every trial recorded so far is kept and each file is whole or absent: "
              "run the same command to resume (it rebuilds what is missing)", file=sys.stderr)
        return EXIT_FAIL
    except Exception as e:  # the file system refusing a write (disk full, read-only...): one line, exit 1
        why = write_failure(e)
        if why is None:
            raise
        print(f"error: {mask_urls(why)}; what was recorded before is kept: fix that (free space, permissions, "
              "the path named) and run the same command again", file=sys.stderr)
        return EXIT_FAIL


__all__ = ["EXIT_BAD_INPUT", "EXIT_FAIL", "EXIT_OK", "UsageError", "build_parser", "experiments_dir", "main"]
