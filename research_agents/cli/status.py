"""`status OUT`: the trials table of a run directory (read-only)."""

from __future__ import annotations

import argparse

from rich.console import Console

from research_agents.cli.common import EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="print the trials table of a run directory")
    status.add_argument("out")
    status.add_argument("--storage", help="the run's --storage URL with its password (run.json keeps none; "
                        "or set PGPASSWORD)")


def command(args: argparse.Namespace, console: Console) -> int:
    from research_agents.console import trials_table
    from research_agents.session import open_run

    session = open_run(args.out, args.storage)
    records = session.store.records()
    console.print(trials_table(records, title=f"{session.study.name}: {len(records)} trials"))
    return EXIT_OK
